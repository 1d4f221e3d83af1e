# Sourced by the other scripts: create .venv once and install h5pool into it,
# with the extras in H5POOL_EXTRAS (default: test,plot,s3,docs — everything the
# tests exercise, including the S3 tests against a local moto server and the
# strict build of the documentation site).
# torch is installed first, pinned, so that pip takes the local CPU build
# instead of resolving the dependency to a multi-GB CUDA build.
python3 -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==${H5POOL_TORCH_VERSION:-2.13.0}"
python -m pip install --quiet -e ".[${H5POOL_EXTRAS:-test,plot,s3,docs}]"
