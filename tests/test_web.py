"""apollo web: the API (sessions, limits, errors, clean-up) and the page in a real headless browser."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import tone, with_lame_tag, write

from apollo.cli import main
from apollo.web import SESSION_COOKIE, Service, create_app

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402


@pytest.fixture()
def service():
    svc = Service()
    yield svc
    svc.close()


def _client(svc: Service) -> TestClient:
    client = TestClient(create_app(svc))
    assert client.get("/").status_code == 200  # the page hands out the session cookie
    return client


def _wait(client: TestClient, job: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get(f"/api/jobs/{job}").json()
        if status["state"] in ("done", "error"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job} did not finish: {status}")


def _post(client: TestClient, name: str, data: bytes, **fields: str):  # noqa: ANN202
    return client.post("/api/jobs", files={"file": (name, io.BytesIO(data), "application/octet-stream")},
                       data={"model": "tiny-test", **fields})


def _cli_restore(src: Path, dst: Path, *options: str) -> np.ndarray:
    assert main(["restore", str(src), "-o", str(dst), "--checkpoint", "tiny-test", "-q", *options]) == 0
    return sf.read(str(dst), dtype="float32")[0]


def test_restores_like_the_cli_and_serves_pictures_and_players(service, tmp_path):
    src = write(tmp_path / "song.mp3", tone(1.5))
    client = _client(service)
    created = _post(client, "song.mp3", src.read_bytes(), format="wav", bits="16")
    assert created.status_code == 201
    status = _wait(client, created.json()["id"])
    assert status["state"] == "done" and status["progress"] == 1.0 and status["duration"] == pytest.approx(1.5, abs=0.1)
    base = f"/api/jobs/{status['id']}"
    download = client.get(f"{base}/restored?download=1")
    assert download.headers["content-disposition"] == 'attachment; filename="song-restored.wav"'
    page, _ = sf.read(io.BytesIO(download.content), dtype="float32")
    assert np.array_equal(page, _cli_restore(src, tmp_path / "cli.wav", "--format", "wav", "--bits", "16"))
    preview = client.get(f"{base}/input")  # the input at the output's rate, for the A/B player
    assert preview.headers["content-type"] == "audio/wav"
    assert sf.info(io.BytesIO(preview.content)).frames == len(page)
    for picture in ("input.png", "restored.png"):
        png = client.get(f"{base}/{picture}").content
        assert png.startswith(b"\x89PNG") and int.from_bytes(png[16:20], "big") > 10  # width


def test_the_input_sample_rate_like_the_cli(service, tmp_path):
    # a 48-kHz file back at 48 kHz (apollo restore --out-rate input), and its A/B preview at that rate too
    src = tmp_path / "video.wav"
    sf.write(src, tone(1.0, rate=48000), 48000, subtype="FLOAT")
    client = _client(service)
    assert service.options()["rates"] == ["model", "input"]
    created = _post(client, "video.wav", src.read_bytes(), format="wav", bits="16", rate="input")
    status = _wait(client, created.json()["id"])
    assert status["state"] == "done" and status["rate"] == "input"
    download = client.get(f"/api/jobs/{status['id']}/restored")
    page, rate = sf.read(io.BytesIO(download.content), dtype="float32")
    assert rate == 48000 and len(page) == 48000
    assert np.array_equal(page, _cli_restore(src, tmp_path / "cli.wav", "--format", "wav", "--bits", "16",
                                             "--out-rate", "input"))
    preview = sf.info(io.BytesIO(client.get(f"/api/jobs/{status['id']}/input").content))
    assert (preview.samplerate, preview.frames) == (48000, len(page))
    bad = _post(client, "video.wav", src.read_bytes(), rate="96000")
    assert bad.status_code == 400 and bad.json()["error"] == "unknown sample rate '96000' (model or input)"


def _dark_vbr() -> bytes:
    """2 s of two tones under 1 kHz, coded by LAME at -V 2 (no Xing frame, as lameenc writes it)."""
    from apollo import degrade

    t = np.arange(2 * 44100) / 44100
    fade = np.minimum(1, np.minimum(t, t[::-1]) / 0.2)  # no click at either end: nothing above 1 kHz
    low = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 1000 * t)]) * fade
    return degrade.encode_mp3(low.astype(np.float32), 44100, None, vbr=2)


def test_a_file_taken_for_dark_at_the_source_says_so(service):
    # the CLI's line, on the page: the default leaves the band above a dark source as coded, and says why
    raw = _dark_vbr()
    client = _client(service)
    notes = {}
    for name, data in (("dark.mp3", with_lame_tag(raw, "vbr", 18500)), ("plain.mp3", raw)):
        created = _post(client, name, data, model="default")
        status = _wait(client, created.json()["id"])
        assert status["state"] == "done"
        notes[name] = status["note"]
    assert notes["dark.mp3"].startswith("its loudest frames end at") and "under 13.9 kHz" in notes["dark.mp3"]
    assert notes["plain.mp3"] is None  # VBR without a stated lowpass: never dark


def test_sessions_do_not_see_each_other(service, tmp_path):
    src = write(tmp_path / "a.wav", tone(0.5))
    alice, bob = _client(service), _client(service)
    assert alice.cookies[SESSION_COOKIE] != bob.cookies[SESSION_COOKIE]
    job = _post(alice, "a.wav", src.read_bytes()).json()["id"]
    _wait(alice, job)
    assert bob.get(f"/api/jobs/{job}").status_code == 404
    assert bob.get(f"/api/jobs/{job}/restored").status_code == 404
    assert bob.delete(f"/api/jobs/{job}").status_code == 404
    stranger = TestClient(create_app(service))  # never loaded the page: no session, no uploads
    assert _post(stranger, "a.wav", src.read_bytes()).status_code == 403
    assert alice.get(f"/api/jobs/{job}/restored").status_code == 200


def test_bad_input_is_the_cli_line_and_other_files_go_on(service, tmp_path):
    client = _client(service)
    bad = _post(client, "../../etc/passwd.mp3", b"this is not audio").json()
    good = _post(client, "fine.wav", write(tmp_path / "fine.wav", tone(0.3)).read_bytes()).json()
    assert bad["name"] == "passwd.mp3"  # the client's name is shown, never used as a path
    assert _wait(client, bad["id"])["error"] == "apollo: error: passwd.mp3: not a recognised audio file"
    assert _wait(client, good["id"])["state"] == "done"
    assert sorted(p.name for p in service.root.iterdir()) == sorted([bad["id"], good["id"]])
    assert _post(client, "x.wav", b"RIFF", model="/etc/passwd").json()["error"] == "unknown model '/etc/passwd'"
    assert _post(client, "x.wav", b"RIFF", format="flac", bits="32f").status_code == 400


def test_upload_limit_and_cleanup(tmp_path):
    svc = Service(max_upload_mb=0.05)
    client = _client(svc)
    big = _post(client, "big.wav", b"\0" * 200_000)
    assert big.status_code == 413 and "upload limit of 0.05 MB" in big.json()["error"]
    job = _post(client, "small.wav", write(tmp_path / "s.wav", tone(0.2)).read_bytes()).json()["id"]
    _wait(client, job)
    assert (svc.root / job).is_dir()
    assert client.delete(f"/api/jobs/{job}").status_code == 200
    assert not (svc.root / job).exists() and client.get(f"/api/jobs/{job}").status_code == 404
    root = svc.root
    svc.close()
    assert not root.exists()  # the server's temporary folder goes when it stops


def test_a_failing_job_does_not_stop_the_worker(service, tmp_path, monkeypatch):
    client = _client(service)
    calls = []

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003
        calls.append(1)
        raise KeyError("a bug")

    monkeypatch.setattr(service, "_restorer", broken)
    first = _post(client, "a.wav", write(tmp_path / "a.wav", tone(0.2)).read_bytes()).json()["id"]
    assert _wait(client, first)["error"].startswith("apollo: error: internal error (KeyError")
    monkeypatch.undo()
    second = _post(client, "a.wav", (tmp_path / "a.wav").read_bytes()).json()["id"]
    assert _wait(client, second)["state"] == "done" and calls == [1]


def test_finished_jobs_expire(tmp_path):
    svc = Service(keep_minutes=60)
    try:
        client = _client(svc)
        job = _post(client, "a.wav", write(tmp_path / "a.wav", tone(0.2)).read_bytes()).json()["id"]
        _wait(client, job)
        svc.expire()
        assert (svc.root / job).is_dir()  # younger than an hour
        svc.jobs[job].created -= 3601
        svc.expire()
        assert not (svc.root / job).exists() and client.get(f"/api/jobs/{job}").status_code == 404
    finally:
        svc.close()


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    import sys

    assert main(["web", "--checkpoints", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == f"apollo: error: --checkpoints {tmp_path / 'missing'}: not a folder\n"
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the [web] extra were not installed
    assert main(["web"]) == 2
    err = capsys.readouterr().err
    assert err == 'apollo: error: apollo web needs uvicorn, which is not installed: pip install "apollo-restore[web]"\n'


def test_offers_the_checkpoints_of_a_server_folder_by_name_only(tmp_path):
    import apollo

    model = apollo.load_model("tiny-test")
    apollo.save_checkpoint(tmp_path / "mine.safetensors", model.state_dict(), model.config)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    svc = Service(tmp_path)
    try:
        assert svc.options()["models"][-1] == "mine.safetensors" and "notes.txt" not in svc.options()["models"]
        client = _client(svc)
        job = _post(client, "a.wav", write(tmp_path / "a.wav", tone(0.3)).read_bytes(), model="mine.safetensors")
        assert _wait(client, job.json()["id"])["state"] == "done"
        assert _post(client, "a.wav", b"RIFF", model=str(tmp_path / "mine.safetensors")).status_code == 400
    finally:
        svc.close()


def _png_rows(path: Path) -> np.ndarray:
    """The colour indices of one of apollo.spectrogram's palette PNGs."""
    import zlib

    data, pos, idat, size = path.read_bytes(), 8, b"", None
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            size = (int.from_bytes(body[4:8], "big"), int.from_bytes(body[:4], "big"))
            assert body[8:10] == bytes([8, 3])  # 8-bit palette
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(size[0], size[1] + 1)
    assert not rows[:, 0].any()  # filter byte: none
    return rows[:, 1:]


def test_spectrogram_picture_puts_a_full_scale_tone_at_its_frequency_and_level(tmp_path):
    from apollo.spectrogram import spectrogram_png

    t = np.arange(2 * 44100) / 44100
    hz = 258.5 * 44100 / 2048  # between FFT bins 258 and 259, both in picture row 64 (bins 257-260)
    spectrogram_png(np.stack([np.sin(2 * np.pi * hz * t)] * 2).astype(np.float32), tmp_path / "tone.png")
    picture = _png_rows(tmp_path / "tone.png")
    assert picture.shape[0] == 256
    loudest = picture.mean(axis=1).argmax()
    assert loudest == 256 - 1 - 64  # high frequencies on top
    # a full-scale sine reads 0 dB; a row averages 4 bins, and the Hann window spreads the tone over its
    # main lobe: about -5 dB of the -100..0 dB scale
    assert 0.9 * 255 <= picture[loudest].min() <= picture[loudest].max() <= 0.97 * 255
    assert picture[:100].max() == 0  # nothing at all far above it


def test_demo_page_is_self_contained(tmp_path, capsys):
    import json

    data = tmp_path / "songs"
    for seed in (1, 2):
        write(data / f"track{seed}.wav", tone(2.0, seed=seed))
    out = tmp_path / "demo"
    args = ["demo", "--data", str(data), "--checkpoint", "tiny-test", "--out", str(out), "--bitrates", "32,128",
            "--seconds", "1", "--no-visqol", "-q"]
    assert main(args) == 0
    result = json.loads((out / "demo.json").read_text())
    assert len(result["excerpts"]) == 2 and result["bitrates"] == [32, 128]
    assert result["systems"]["tiny-test"]["sha256"] == "tiny-test"
    page = (out / "index.html").read_text()
    assert "http" not in page  # nothing from elsewhere
    links = re.findall(r'src="([^"]+)"', page)
    assert len(links) == 2 * (1 + 2 * 2) * 2  # per excerpt: reference + 2 bitrates x (MP3, restored); img + audio
    for link in links:
        assert (out / link).is_file()
    cell = result["excerpts"][0]["bitrates"]["128"]
    assert set(cell) == {"mp3", "tiny-test"} and cell["mp3"]["si_snr"] > cell["tiny-test"]["si_snr"]
    assert sf.info(str(out / cell["tiny-test"]["audio"])).duration == pytest.approx(1.0, abs=0.01)
    assert main(args) == 2 and "is not empty" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _browser(download_dir: Path):  # noqa: ANN202
    """Debian's chromium, headless, through its chromedriver; skipped where they are missing (not in CI)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are missing (.ci/apt-packages.txt installs them)")
        pytest.skip("chromium/chromedriver not installed")
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900",
                 "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                              "download.prompt_for_download": False})
    return webdriver.Chrome(service=DriverService(driver), options=options)


def test_page_in_a_headless_browser(tmp_path):
    uvicorn = pytest.importorskip("uvicorn")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser = _browser(downloads)
    svc = Service()
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(svc), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.select import Select
        from selenium.webdriver.support.wait import WebDriverWait

        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 120)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#model option")) > 1)
        Select(browser.find_element(By.ID, "model")).select_by_value("tiny-test")
        src = write(tmp_path / "song.mp3", tone(1.0))
        picker = browser.find_element(By.ID, "files")
        browser.execute_script("arguments[0].hidden = false", picker)
        picker.send_keys(str(src))
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "a.download"))
        for image in ("img.spec-input", "img.spec-restored"):  # both pictures really loaded
            wait.until(lambda b, image=image: b.execute_script(
                "const i = document.querySelector(arguments[0]); return i.complete && i.naturalWidth > 0", image))
        players = browser.find_elements(By.CSS_SELECTOR, "audio")
        assert len(players) == 2 and players[0].get_attribute("src").endswith("/input")
        toggle = browser.find_element(By.CSS_SELECTOR, "button.ab")
        toggle.click()  # A/B: the restored player takes over
        assert "restored" in toggle.text and players[0].get_attribute("hidden") is not None
        link = browser.find_element(By.CSS_SELECTOR, "a.download")
        assert link.text == "download song-restored.flac"
        link.click()
        target = downloads / "song-restored.flac"
        deadline = time.time() + 60
        while not target.exists() and time.time() < deadline:
            time.sleep(0.1)
        page, _ = sf.read(str(target), dtype="float32")
        assert np.array_equal(page, _cli_restore(src, tmp_path / "cli.flac"))
        # a file the default takes for dark at the source: its card says so under the progress line
        Select(browser.find_element(By.ID, "model")).select_by_value("default")
        dark = tmp_path / "dark.mp3"
        dark.write_bytes(with_lame_tag(_dark_vbr(), "vbr", 18500))
        picker.send_keys(str(dark))
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".job .note"))
        assert browser.find_element(By.CSS_SELECTOR, ".job .note").text.startswith("its loudest frames end at")
    finally:
        browser.quit()
        server.should_exit = True
        thread.join(timeout=30)
        svc.close()
