"""The frame model's RunInference handler: batching, keys, device choice."""
import apache_beam as beam
import torch
import numpy as np
import pytest
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from models.checkpoint import load_checkpoint
from models.device import DeviceUnavailableError, resolve_device
from models.inference import FramePredictor
from transforms.elements import CropKey
from transforms.handler import FrameModelHandler

BATCH_SIZES: list[int] = []


class RecordingHandler(FrameModelHandler):
    """Records the size of every batch RunInference hands to the model."""

    def run_inference(self, batch, model, inference_args=None):
        BATCH_SIZES.append(len(batch))
        return super().run_inference(batch, model, inference_args)


def crops(n, size=224, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_keys_survive_batching_and_scores_match_the_model():
    images = crops(11)
    keyed = [(CropKey(f"memory://v{i % 3}.mp4", i % 2, i), img) for i, img in enumerate(images)]
    predictor = FramePredictor(load_checkpoint("untrained"), resolve_device("cpu"), precision="fp32")
    probs, embeddings = predictor(np.stack(images))
    expected = [(key, round(float(p), 4), embeddings.shape[1]) for (key, _), p in zip(keyed, probs)]
    BATCH_SIZES.clear()
    handler = RecordingHandler("untrained", device="cpu", batch_size=4, precision="fp32")
    with TestPipeline() as p:
        out = (
            p
            | beam.Create(keyed)
            | RunInference(KeyedModelHandler(handler))
            | beam.Map(lambda kv: (kv[0], round(kv[1].inference.fake_probability, 4), kv[1].inference.embedding.shape[0]))
        )
        assert_that(out, equal_to(expected))
    assert sum(BATCH_SIZES) == 11 and max(BATCH_SIZES) <= 4


def test_batching_settings_and_device_recorded():
    handler = FrameModelHandler("untrained", device="cpu", batch_size=7)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 7}
    model = handler.load_model()
    results = list(handler.run_inference(crops(3), model))
    assert len(results) == 3
    assert all(r.inference.device in ("cpu", "cpu bf16") and 0.0 <= r.inference.fake_probability <= 1.0
               for r in results)
    assert all(r.example is None for r in results)  # pixels are not echoed downstream
    assert handler.get_num_bytes(crops(2)) == 2 * 224 * 224 * 3
    # crops cut for another model fail the batch (an error row in a scan), never resized to fit
    from models.preprocess import CropSizeError

    with pytest.raises(CropSizeError, match="96x96 px but the model takes 224x224"):
        list(handler.run_inference(crops(2, size=96), model))


def test_the_handler_holds_the_processs_one_copy_of_the_checkpoint():
    from transforms.checkpoints import acquire_checkpoint

    model = FrameModelHandler("untrained", device="cpu", optimize=False).load_model()
    assert model.checkpoint is acquire_checkpoint("untrained")  # the copy the aggregator gets too


def test_the_handler_and_the_scout_scorer_share_one_frame_predictor(monkeypatch):
    """One frame model readied per process: RunInference's threads and scouting all get the same predictor."""
    from concurrent.futures import ThreadPoolExecutor

    import transforms.checkpoints as checkpoints
    import transforms.scouting as scouting
    from models.device import native_bf16

    # Fresh Shared handles, so that what earlier tests in this process built does not count.
    monkeypatch.setattr(checkpoints, "_PREDICTORS", {}, raising=False)
    monkeypatch.setattr(scouting, "_SCORERS", {}, raising=False)
    built = []
    init = FramePredictor.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(FramePredictor, "__init__", counting_init)
    # As in a scan: the handler gets the precision the driver resolved, the scout scorer model.precision as written.
    resolved = "bf16" if native_bf16(resolve_device("cpu")) else "fp32"
    handler = FrameModelHandler("untrained", device="cpu", optimize=False, precision=resolved)

    def scout():
        return scouting.acquire_scout_scorer("untrained", device="cpu", precision="auto", optimize=False,
                                             batch_size=3)

    with ThreadPoolExecutor(4) as pool:  # set up at once, as a worker's threads do
        futures = [pool.submit(handler.load_model), pool.submit(scout), pool.submit(handler.load_model),
                   pool.submit(scout)]
        model, scorer, model_again, scorer_again = [f.result() for f in futures]
    assert len(built) == 1, f"the frame model was readied {len(built)} times in one process"
    assert model_again is model and scorer.predictor is scorer_again.predictor is model.predictor is built[0]
    assert scorer.checkpoint is model.checkpoint is checkpoints.acquire_checkpoint("untrained")
    images = np.stack(crops(5))  # the scorer's batches of 3 and 2 score as the handler's one batch of 5
    np.testing.assert_allclose(scorer(images), model(images)[0], atol=1e-5)


def test_model_copies_enable_cross_process_sharing():
    assert not FrameModelHandler("untrained").share_model_across_processes()
    shared = FrameModelHandler("untrained", model_copies=1)
    assert shared.share_model_across_processes() and shared.model_copies() == 1


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_a_gpu_without_one_fails_loudly():
    with pytest.raises(DeviceUnavailableError, match="no CUDA GPU"):
        FrameModelHandler("untrained", device="cuda").load_model()
    assert resolve_device("auto").type == "cpu"


class FailingHandler(FrameModelHandler):
    """A model that fails on every batch, as an out-of-memory GPU would."""

    def run_inference(self, batch, model, inference_args=None):
        raise RuntimeError("CUDA out of memory (simulated)\nwith a second line")


def test_a_failing_model_gives_error_rows_not_a_failed_job(sample_archive, tmp_path):
    import os

    from pipeline.config import ScanConfig, load_config
    from pipeline.scan import build_scan_pipeline, prepare_scan

    _, items = sample_archive
    inputs = [i.uri for i in items if i.kind == "image"]
    plan = prepare_scan(inputs, str(tmp_path), load_config(ScanConfig, None, ["faces.detect_size=320"]))
    pipeline = TestPipeline()
    rows = build_scan_pipeline(pipeline, plan, handler=FailingHandler("untrained", device="cpu"))
    assert_that(
        rows | beam.Map(lambda r: (os.path.basename(r["uri"]), r["status"], r["error"])),
        equal_to([(os.path.basename(u), "error", "frame model failed: RuntimeError: CUDA out of memory (simulated)")
                  for u in inputs]),
    )
    pipeline.run().wait_until_finish()
    # the real builder also wrote the error rows where a scan's verdicts go
    import pyarrow.parquet as pq

    written = pq.read_table(plan.verdicts_dir).to_pylist()
    assert sorted(r["status"] for r in written) == ["error"] * len(inputs)


def test_the_optimized_cpu_model_gives_the_eager_models_outputs():
    checkpoint = load_checkpoint("untrained")
    eager = FramePredictor(checkpoint, resolve_device("cpu"), precision="fp32")
    frozen = FramePredictor(load_checkpoint("untrained"), resolve_device("cpu"), optimize=True, precision="fp32")
    assert isinstance(frozen.model, torch.jit.ScriptModule) and not isinstance(eager.model, torch.jit.ScriptModule)
    for n in (1, 5):  # traced with a batch of 2: other batch sizes work too
        images = np.stack(crops(n, size=224, seed=n))
        (p_eager, e_eager), (p_frozen, e_frozen) = eager(images), frozen(images)
        np.testing.assert_allclose(p_frozen, p_eager, atol=1e-4)
        np.testing.assert_allclose(e_frozen, e_eager, rtol=1e-4, atol=1e-3)


def test_a_model_that_cannot_be_traced_runs_eagerly(caplog):
    checkpoint = load_checkpoint("untrained")
    # TorchScript cannot trace a model whose outputs hold anything but tensors
    checkpoint.frame_model.forward = lambda x: {"logits": x[:, :2, 0, 0], "embedding": x[:, :, 0, 0], "note": "text"}
    with caplog.at_level("WARNING"):
        predictor = FramePredictor(checkpoint, resolve_device("cpu"), optimize=True)
    probs, _ = predictor(np.stack(crops(2, size=224)))
    assert probs.shape == (2,) and "eager mode" in caplog.text


def test_bf16_moves_the_demo_models_probabilities_by_little():
    """bf16 autocast (the default where the CPU has AMX/AVX512-BF16, and on GPUs) against fp32, on real faces."""
    from models.align import align_face
    from models.faces import FaceDetector
    from pipeline.scan import DEMO_CHECKPOINT
    from tests.conftest import astronaut_scene

    frames = np.stack([astronaut_scene(x=40 + 30 * i) for i in range(4)])
    faces = FaceDetector(detect_size=640).detect(frames)
    images = np.stack([align_face(f, d.landmarks[0], 224, 0.25)[0] for f, d in zip(frames, faces)])
    fp32 = FramePredictor(load_checkpoint(DEMO_CHECKPOINT), resolve_device("cpu"), optimize=True, precision="fp32")
    bf16 = FramePredictor(load_checkpoint(DEMO_CHECKPOINT), resolve_device("cpu"), optimize=True, precision="bf16")
    assert fp32.device_name == "cpu" and bf16.device_name == "cpu bf16"
    np.testing.assert_allclose(bf16(images)[0], fp32(images)[0], atol=0.02)
    with pytest.raises(ValueError, match="valid: auto, fp32, bf16"):
        FramePredictor(load_checkpoint("untrained"), resolve_device("cpu"), precision="fp16")


def test_each_call_runs_on_the_workers_share_of_threads():
    # A worker thread may start with another thread's count (torch's per-thread
    # setting, inherited at first use); every call re-asserts the configured one.
    class Model:
        device_name = "cpu"

        def __call__(self, crops):
            seen.append(torch.get_num_threads())
            return np.zeros(len(crops), np.float32), np.zeros((len(crops), 4), np.float32)

    seen = []
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        handler = FrameModelHandler("unused.pt", torch_threads=1)
        results = list(handler.run_inference([np.zeros((8, 8, 3), np.uint8)] * 3, Model()))
        assert seen == [1] and len(results) == 3
    finally:
        torch.set_num_threads(before)
