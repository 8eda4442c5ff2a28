"""A decoder taken over by a hostile file reaches nothing: no network, secrets, files, programs or worker.

``tests.faulty_decoders:Escapist`` stands in for such a decoder: it tries each
escape from inside the decoder child and reports the outcomes in its error,
and the next decoder (pyav) still reads the file. Run with containment off,
the same attempts succeed, which shows the probe itself works.
"""
import json
import os
import shutil
import socket
import tempfile
import threading

import pytest

from models.crops import CropSpec
from models.faces import FaceDetector
from pipeline.config import DecodeConfig, ScanConfig
from tests.awkward_corpus import face_frames, write_video
from transforms.containment import LAYERS, ContainmentError
from transforms.elements import MediaInput
from transforms.face_extractor import FaceExtractor
from transforms.media import MediaError
from transforms.sandbox import DecoderSandbox

ESCAPIST = "tests.faulty_decoders:Escapist"
SECRET = "hunter2-not-for-decoders"


class Listener:
    """A TCP listener on 127.0.0.1 that keeps whatever reaches it."""

    def __init__(self):
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                self.received.append(conn.recv(1024))

    def close(self):
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(detect_size=320, min_face_size=40)


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    """A face video whose ``comment`` tag carries the escape plan, and the targets it names."""
    listener = Listener()
    monkeypatch.setenv("DEEPFAKE_SCAN_TEST_SECRET", SECRET)
    # Places only containment keeps a decoder from: readable and writable by anyone as far as file modes go.
    open_folder = tempfile.mkdtemp(prefix="deepfake-scan-containment-")
    os.chmod(open_folder, 0o777)
    secret_file = os.path.join(open_folder, "credentials.json")
    with open(secret_file, "w") as f:
        f.write(SECRET)
    os.chmod(secret_file, 0o644)
    plan = {"port": listener.port, "secret_env": "DEEPFAKE_SCAN_TEST_SECRET", "secret_file": secret_file,
            "write_to": os.path.join(open_folder, "written-by-the-decoder"), "worker_pid": os.getpid()}
    video = write_video(tmp_path / "hostile.mp4", face_frames(30), metadata={"comment": json.dumps(plan)})
    yield video, plan, listener
    listener.close()
    shutil.rmtree(open_folder, ignore_errors=True)


def _scan(detector, video, containment: str):
    """The scan's extraction of one input, decoders ``[Escapist, pyav]``: its row and the escapes' outcomes."""
    config = ScanConfig()
    decode = DecodeConfig(decoders=[ESCAPIST, "pyav"], timeout_s=60)
    sandbox = DecoderSandbox(decode.timeout_s, decode.memory_mb, containment=containment)
    extractor = FaceExtractor(config.sampling, config.faces, detector, CropSpec("aligned", 224), decode, sandbox)
    try:
        layers = sandbox.containment_layers()
        result = extractor.extract(MediaInput(str(video), "video"))
    finally:
        sandbox.shutdown()
    (warning,) = [w for w in result.info.warnings if w.startswith(ESCAPIST)]
    outcomes = json.loads(warning.split("escapes ", 1)[1].rsplit("; decoded with", 1)[0])
    print(f"containment {containment}: active {json.dumps(layers['active'], indent=1)}; "
          f"missing {layers['missing']}; escapes {json.dumps(outcomes, indent=1)}")
    return result, layers, outcomes


def test_a_taken_over_decoder_reaches_nothing_and_the_input_still_gets_its_row(detector, hostile):
    video, plan, listener = hostile
    result, layers, outcomes = _scan(detector, video, "best_effort")
    assert result.status == "ok" and result.info.decoder == "pyav"
    assert set(outcomes) == {"connect", "environment", "read", "write", "exec", "signal"}
    for escape, outcome in outcomes.items():
        assert outcome.startswith("failed: "), (escape, outcome, layers)
    listener.close()
    assert listener.received == []
    assert not os.path.exists(plan["write_to"])
    assert SECRET not in json.dumps(outcomes)


def test_without_containment_the_same_attempts_succeed(detector, hostile):
    """The control: proves the escapes above failed because of the containment, not the probe."""
    video, plan, listener = hostile
    result, layers, outcomes = _scan(detector, video, "off")
    assert result.status == "ok" and result.info.decoder == "pyav"
    assert layers == {"level": "off", "active": {}, "missing": {}}
    assert outcomes == {"connect": "ok: sent", "environment": f"ok: {SECRET}", "read": f"ok: {SECRET}",
                        "write": "ok: 7", "exec": "ok: ran", "signal": "ok: None"}
    listener.close()
    assert listener.received == [b"escaped"]
    assert open(plan["write_to"]).read() == "escaped"


@pytest.mark.parametrize("containment", ["best_effort", "off"])
def test_each_input_is_decoded_by_a_process_of_its_own(moving_face_video, containment):
    """Whatever a decoder taken over by one input leaves in its process, the next input does not meet."""
    with DecoderSandbox(timeout_s=60, containment=containment) as sandbox:
        for _ in range(3):
            with pytest.raises(MediaError, match="inputs opened in this process: 1$"):
                sandbox.open("tests.faulty_decoders:Counts", str(moving_face_video), max_side=1920, max_pixels=10**8)
            sandbox.close_input()
        assert sandbox.children_started == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="every layer needs a root worker, as Dataflow's containers are")
def test_strict_finds_every_layer_on_this_machine():
    with DecoderSandbox(containment="strict") as sandbox:
        layers = sandbox.containment_layers()
    print("layers in force:", json.dumps(layers, indent=1))
    assert set(layers["active"]) == set(LAYERS) and layers["missing"] == {}


def test_strict_refuses_to_decode_without_a_layer(monkeypatch, tmp_path, moving_face_video):
    """A layer the worker image lacks (here: pyseccomp, hidden) stops a strict worker; best_effort carries on."""
    (tmp_path / "pyseccomp.py").write_text("raise ImportError('hidden by the test')\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the child imports what the worker's sys.path finds
    limits = dict(max_side=1920, max_pixels=10**8)
    with DecoderSandbox(timeout_s=60, containment="best_effort") as sandbox:
        assert "seccomp" in sandbox.containment_layers()["missing"]
        assert sandbox.open("pyav", str(moving_face_video), **limits).num_frames == 75
    with DecoderSandbox(timeout_s=60, containment="strict") as sandbox:
        with pytest.raises(ContainmentError, match="strict and the decoder child lacks seccomp"):
            sandbox.containment_layers()
        with pytest.raises(MediaError, match="strict and the decoder child lacks seccomp") as info:
            sandbox.open("pyav", str(moving_face_video), **limits)
        assert info.value.status == "error"
    with pytest.raises(ValueError, match="strict needs decode.isolate"):
        DecoderSandbox(isolate=False, containment="strict")
    with pytest.raises(ValueError, match="decode.containment must be one of"):
        DecoderSandbox(containment="paranoid")


def test_a_scan_records_its_containment_and_strict_stops_in_one_line(moving_face_video, tmp_path, capsys):
    from pipeline.cli import main

    out = tmp_path / "scan"
    assert main(["scan", str(moving_face_video), "--output", str(out), "--set", "decode.containment=strict",
                 "--set", "sampling.clip_len=8", "--quiet"]) == 0
    record = json.loads((out / "run.json").read_text())["decode_containment"]
    assert record["level"] == "strict" and set(record["active"]) == set(LAYERS) and not record["missing"]
    print("layers in force on this machine:", ", ".join(sorted(record["active"])))

    assert main(["scan", str(moving_face_video), "--output", str(tmp_path / "x"), "--set", "decode.containment=strict",
                 "--set", "decode.isolate=false"]) == 2
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("deepfake-scan")]
    assert len(ours) == 1 and "strict needs decode.isolate: true" in ours[0]
