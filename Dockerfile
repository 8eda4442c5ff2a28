# GPU worker image for Dataflow: CUDA PyTorch with its matching torchvision, the Beam
# SDK's boot entrypoint, and deepfake-scan. Build and push (see README, "Dataflow GPU workers"):
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/deepfake-scan-gpu:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/deepfake-scan-gpu:0.1.0
# Python and Beam versions must match the machine that launches the job (3.11, 2.77.0).
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam

FROM python:${PYTHON_VERSION}-slim
ARG BEAM_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# decord and OpenCV need these shared libraries at import time; libseccomp2 is what pyseccomp
# (from setup.py) loads to build the decoder child's system-call filter (decode.containment).
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libseccomp2 \
    && rm -rf /var/lib/apt/lists/*
# CUDA build of torch first, with the torchvision built for it (facenet-pytorch uses its NMS);
# the NVIDIA driver comes from Dataflow (worker_accelerator=...;install-nvidia-driver).
RUN pip install torch==2.13.0 torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cu128
COPY setup.py README.md /opt/deepfake-scan/
COPY pipeline /opt/deepfake-scan/pipeline
COPY transforms /opt/deepfake-scan/transforms
COPY models /opt/deepfake-scan/models
COPY configs /opt/deepfake-scan/configs
# torch==2.13.0 is already satisfied by the CUDA build (2.13.0+cu128), so nothing re-downloads it.
RUN pip install "/opt/deepfake-scan" "apache-beam[gcp]==${BEAM_VERSION}" \
    && pip install --no-deps facenet-pytorch==2.6.0 \
    && python -c "import torch, torchvision, decord, facenet_pytorch, pyseccomp; print(torch.__version__, torchvision.__version__)"
# decode.containment: strict also needs, from the host rather than the image, a kernel with Landlock
# enabled and a container allowed to unshare a network namespace and change uid (root, as Dataflow's
# are); the scan's run.json records the layers a worker had (see README, "Security").
# The Beam SDK harness: Dataflow starts every worker container through this entrypoint.
COPY --from=beam /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]
