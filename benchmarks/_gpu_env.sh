# Sourced by the CUDA scripts beside it: run from a source checkout with the machine's
# python3 (a CUDA build of PyTorch with NumPy, SciPy, scikit-image, typer and pytest, as
# in the usual PyTorch images); the few pure-Python packages such images lack (pydantic
# and pydantic-core, annotated-types, typing-inspection, typing-extensions, useq-schema,
# shapely) come from a folder of wheels named by SCOPELOOP_WHEELS when it is set.
# Nothing is downloaded. Leaves the shell in the checkout's root.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || exit 1
cd "$root" || exit 1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ -n "${SCOPELOOP_WHEELS:-}" ]]; then
    site=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" \
        "$SCOPELOOP_WHEELS"/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:$site"
fi
