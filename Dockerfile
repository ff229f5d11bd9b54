# bnncli in a container (README.md, "Docker"). Two variants, which differ only in the index torch
# and torchvision come from:
#   CPU (the default; PyTorch's CPU wheels, no CUDA libraries):
#     docker build -t bnncli .
#   CUDA (PyPI's torch, with the CUDA libraries; for `docker run --gpus all` training):
#     docker build -t bnncli:cuda --build-arg TORCH_INDEX=https://pypi.org/simple .
# Then: docker run --rm -v "$PWD/runs:/home/bnn/runs" bnncli train --arch binarydensenet_tiny \
#         --data builtin:shapes-mini --epochs 1 -o runs/demo
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# The versions the test suite ran with; other pairs must match each other (torchvision's table).
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
# The other dependencies come from pyproject.toml, the one list: installed here with an empty
# package, in their own layer, so that a change to the code does not reinstall them. The extras:
# fast (numba, the compiled runtime kernels), larq (h5py, bnn import larq) and tensorboard. The
# stand-in package states a version: pyproject.toml reads it from bnncli.__version__.
COPY pyproject.toml /src/
RUN mkdir /src/bnncli && echo '__version__ = "0"' > /src/bnncli/__init__.py && touch /src/README.md \
 && pip install "/src[fast,larq,tensorboard]" \
 && pip uninstall -y bnncli && rm -rf /src
COPY pyproject.toml README.md /src/
COPY bnncli /src/bnncli
RUN pip install --no-deps /src && pip check

FROM python:${PYTHON_VERSION}-slim
COPY --from=build /opt/venv /opt/venv
COPY docker/entrypoint.sh /usr/local/bin/bnn-entrypoint
# Any uid may run the image (docker run -u "$(id -u):$(id -g)"): HOME, numba's cache of compiled
# kernels and matplotlib's font cache are folders every user can write. BNNCLI_CONTAINER makes the
# CLI's advice about unwritable folders name docker's options.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HOME=/home/bnn \
    NUMBA_CACHE_DIR=/opt/bnncli/numba-cache MPLCONFIGDIR=/opt/bnncli/matplotlib BNNCLI_CONTAINER=1
# The kernels are compiled here, once, for the CPU of the machine that builds the image (numba
# compiles them again, once per container, on a CPU that differs).
RUN useradd --uid 10001 --home-dir /home/bnn --create-home --shell /usr/sbin/nologin bnn \
 && mkdir /home/bnn/runs && chown bnn:bnn /home/bnn/runs && chmod 1777 /home/bnn /home/bnn/runs \
 && python -m bnncli.runtime.backends.numba.warmup \
 && python -c "import matplotlib.font_manager" \
 && chmod -R a+rwX /opt/bnncli
WORKDIR /home/bnn
# Runs bnn as the owner of ./runs (docker/entrypoint.sh), or as the user given with -u.
ENTRYPOINT ["bnn-entrypoint"]
CMD ["--help"]
