# syntax=docker/dockerfile:1
# bnncli in a container: `docker build -t bnncli .` then `docker run --rm bnncli models`.
# Train with your data mounted: docker run --rm -v /imagenet:/data -v $PWD/runs:/home/bnn/runs \
#   bnncli train --arch binarydensenet28 --data /data
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
# CPU wheels keep the image small; pass --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 for CUDA.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first, in their own layer, so code changes do not reinstall torch. numba (the compiled
# runtime backend), h5py (bnn import larq) and tensorboard (bnn train --tensorboard) are the optional
# extras, included here; numba caches its compiled code in ~/.cache/numba for the bnn user.
RUN pip install --index-url "${TORCH_INDEX}" torch torchvision \
 && pip install "typer>=0.12" "rich>=13" "onnx>=1.16" "onnxruntime>=1.18" "pillow>=10" "numpy>=2.0" "matplotlib>=3.7" \
    "numba>=0.60" "h5py>=3.8" "tensorboard>=2.17.1"
COPY pyproject.toml README.md /src/
COPY bnncli /src/bnncli
RUN pip install --no-deps /src

FROM python:${PYTHON_VERSION}-slim
RUN useradd --create-home --uid 10001 bnn
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER bnn
WORKDIR /home/bnn
ENTRYPOINT ["bnn"]
CMD ["--help"]
