"""End to end through a real browser: `dagster dev` on a free localhost port, the asset graph, a drop materialized
FROM THE UI (Materialize -> pick the partition in the launch dialog -> Launch), the run succeeds, screenshots.

Set-up, once per machine: Debian's ``chromium`` and ``chromium-driver`` are installed with apt-get (as root,
non-interactive, under a file lock; the binaries' presence is the marker). Where that is impossible (not root, no
apt-get, apt fails, CLIP_ASSETS_NO_APT set) the test is skipped with the reason.

Everything stays on 127.0.0.1 (the test also checks that the server listens on the loopback interface only): the
data home, the Dagster instance (a copy of the project's dagster.yaml with its storage moved into the test's tmp
dir) and the server are private to the test; the server runs in its own process group and is killed at teardown.
Before the browser starts, the automation sensors and the schedules are switched off with the same GraphQL
mutations the UI's toggles send (see ``_stop_automation``), so the only run is the one the test launches. Screenshots go to ``artifacts/e2e/`` (git-ignored):

    01_asset_lineage.png       the global asset lineage (one node per group once several domains exist)
    02_ingest_graph.png        the ingest group's graph: raw_pairs, rejected_pairs -> links to the groups downstream
    03_launch_dialog.png       the launch dialog with the drop picked as the partition
    04_run_success.png         the run page once the run succeeded
    05_asset_materialized.png  raw_pairs' page afterwards
    06_asset_summary.png       curated_subsets' page (materialized from the UI): the summary inline, with its plot
    07_contact_sheet.png       a subset's contact sheet in the static HTML report (opened from disk, file://)
    08_since_last.png          curated_subsets' page after a second drop: the "since the last materialization" table
    09_since_last_report.png   the same table in the second report's HTML page

The drop is scored by hand in the score assets' schemas (tests/score_tables.py; no model is trained), and the
second drop is ingested in the test process with the landing sensor stopped (so no process_drop run starts).

Selectors (the Dagster 1.13 UI has no data-testid on these elements, so the test uses what a person reads):
* graph:        ``/asset-groups`` (global lineage), then ``/locations/clip_assets/asset-groups/ingest``, whose node
                ``svg foreignObject [data-tooltip='raw_pairs']`` is the node's title in the lineage SVG;
* side panel:   the link/button "View in Asset Catalog";
* launch:       the button whose text starts with "Materialize" (the asset page's primary action), then
                "Confirm" in the "Additional assets will be materialized" notice (raw_pairs and rejected_pairs are
                one multi-asset that cannot be subset), then in the dialog (``[role=dialog]``) the partition
                picker (``[aria-haspopup=dialog]``), its "Filter partitions" input and the ``[role=menuitem]``
                whose text is the drop, and finally the button "Launch 1 run";
* success:      the run's status comes from the server's GraphQL endpoint on localhost; the run page is then
                loaded and must show "Success".
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "e2e"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
APT_PACKAGES = ["chromium", "chromium-driver"]
APT_LOCK = Path(tempfile.gettempdir()) / "clip_assets_apt_chromium.lock"
DROP = "synth-s3-000"
SERVER_TIMEOUT_S = 240
RUN_TIMEOUT_S = 300


# ------------------------------------------------------------------ chromium + chromedriver
def _tail(text: str, n: int = 800) -> str:
    text = (text or "").strip()
    return text if len(text) <= n else "..." + text[-n:]


def install_chromium(timeout_s: float = 900.0) -> float:
    """Make sure /usr/bin/chromium and /usr/bin/chromedriver exist; return the seconds apt-get took (0 if none).

    Calls ``pytest.skip`` with the reason where they cannot be installed.
    """
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return 0.0
    if os.environ.get("CLIP_ASSETS_NO_APT"):
        pytest.skip("chromium/chromedriver missing and CLIP_ASSETS_NO_APT is set: not installing them")
    if shutil.which("apt-get") is None:
        pytest.skip("chromium/chromedriver missing and there is no apt-get here (not a Debian-like system)")
    if os.geteuid() != 0:
        pytest.skip("chromium/chromedriver missing and the tests do not run as root, so apt-get cannot install "
                    "them: run `sudo apt-get install chromium chromium-driver` once")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", APT_LISTCHANGES_FRONTEND="none")
    t0 = time.monotonic()
    with open(APT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second test process waits here, then finds the binaries
        if CHROMIUM.exists() and CHROMEDRIVER.exists():
            return time.monotonic() - t0
        for cmd in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                     "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
                     *APT_PACKAGES]):
            left = timeout_s - (time.monotonic() - t0)
            try:
                p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max(left, 1.0),
                                   stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                pytest.skip(f"`{' '.join(cmd)}` took longer than {timeout_s:.0f}s: cannot install chromium")
            if p.returncode != 0:
                pytest.skip(f"`{' '.join(cmd)}` failed (exit {p.returncode}), cannot install chromium: "
                            f"{_tail(p.stderr or p.stdout)}")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"apt-get installed {APT_PACKAGES} but {CHROMIUM} or {CHROMEDRIVER} is still missing")
    return time.monotonic() - t0


@pytest.fixture(scope="session")
def chromium():
    seconds = install_chromium()
    if seconds:
        print(f"\n[e2e] apt-get installed chromium + chromium-driver in {seconds:.0f}s")
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture
def browser(chromium, tmp_path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1600,1000", f"--user-data-dir={tmp_path / 'chrome'}"]:
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


# ------------------------------------------------------------------ data home, instance, server
def _write_drop(landing: Path) -> str:
    try:
        from clip_assets.world import write_drops
    except ImportError:  # the synthetic world is not there yet: a small hand-made drop
        from conftest import build_drop, jpeg_bytes

        samples = [{"key": f"{i:09d}", "image": jpeg_bytes(i), "caption": f"a caption {i}"} for i in range(200)]
        build_drop(landing / DROP, [samples[:100], samples[100:]])
        return DROP
    [path] = write_drops(landing, drops=1, pairs=200, seed=3, shard_size=100)
    return Path(path).name


def _instance_yaml(dagster_home: Path) -> None:
    """The project's dagster.yaml with every storage path moved into ``dagster_home``; the rest unchanged."""
    cfg = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    cfg["storage"] = {"sqlite": {"base_dir": str(dagster_home / "storage")}}
    cfg["local_artifact_storage"]["config"]["base_dir"] = str(dagster_home)
    cfg["compute_logs"]["config"]["base_dir"] = str(dagster_home / "logs")
    cfg.setdefault("telemetry", {})["enabled"] = False
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(base: str, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"{base}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out = json.loads(r.read())
    if out.get("errors"):
        raise AssertionError(f"GraphQL errors: {out['errors']}")
    return out["data"]


class Stop(Exception):
    """Raised inside a polled function to stop waiting at once (the server died, the run failed)."""


def _wait(what: str, fn, timeout: float, every: float = 1.0, log: Path | None = None):
    """Poll ``fn`` until it returns something truthy (returned) or ``timeout`` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Stop:
            raise
        except Exception as e:  # noqa: BLE001 - keep polling (server not up yet, element re-rendered...)
            last = e
        time.sleep(every)
    extra = f"\n--- dagster dev log tail ---\n{_tail(log.read_text(errors='replace'), 4000)}" if log else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r}){extra}")


@pytest.fixture
def dagster_dev(tmp_path):
    """A private data home with one drop, a private instance with the drop registered, and `dagster dev`."""
    import dagster as dg

    home = tmp_path / "home"
    (home / "landing").mkdir(parents=True)
    drop = _write_drop(home / "landing")
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    _instance_yaml(dagster_home)
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        instance.add_dynamic_partitions("drops", [drop])  # known to the sensor, so it does not launch its own run
    finally:
        instance.dispose()

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in {"DAGSTER_HOME", "CLIP_ASSETS_HOME"}}
    env.update(DAGSTER_HOME=str(dagster_home), CLIP_ASSETS_HOME=str(home), PYTHONUNBUFFERED="1")
    log = tmp_path / "dagster_dev.log"
    dagster = Path(sys.executable).with_name("dagster")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: webserver, daemon, code server, runs
        )
    try:
        def up():
            if proc.poll() is not None:
                raise Stop(f"dagster dev exited with {proc.returncode}: {_tail(log.read_text(errors='replace'))}")
            with urllib.request.urlopen(f"{base}/server_info", timeout=5) as r:
                return r.status == 200

        _wait("dagster dev to serve /server_info", up, SERVER_TIMEOUT_S, log=log)

        def location_loaded():
            data = _graphql(base, "{ workspaceOrError { __typename ... on Workspace { locationEntries { name "
                                  "loadStatus locationOrLoadError { __typename ... on PythonError { message } } "
                                  "} } } }")
            entries = data["workspaceOrError"]["locationEntries"]
            for e in entries:
                if e["locationOrLoadError"] and e["locationOrLoadError"]["__typename"] == "PythonError":
                    pytest.fail(f"code location {e['name']} failed to load: {e['locationOrLoadError']['message']}")
            return entries and all(e["loadStatus"] == "LOADED" for e in entries)

        _wait("the clip_assets code location to load", location_loaded, SERVER_TIMEOUT_S, log=log)
        if Path("/proc/net/tcp").exists():  # served on the loopback interface only
            assert _listen_addresses(port) == {"127.0.0.1"}, _listen_addresses(port)
        print(f"\n[e2e] stopped for the test: {_stop_automation(base)}")
        yield {"base": base, "home": home, "dagster_home": dagster_home, "drop": drop, "log": log}
    finally:
        _stop(proc)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, ARTIFACTS / "dagster_dev.log")


def _listen_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (Linux /proc/net/tcp{,6}); empty elsewhere."""
    out = set()
    for name, width in (("tcp", 8), ("tcp6", 32)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if fields[3] == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                if width == 8:
                    out.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
                else:
                    raw = b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, 32, 8))
                    out.add(socket.inet_ntop(socket.AF_INET6, raw))
    return out


REPO_SELECTOR = {"repositoryLocationName": "clip_assets", "repositoryName": "__repository__"}


def _stop_automation(base: str) -> list[str]:
    """Stop the schedules and the automation-condition sensors with the mutations the UI's toggles send.

    This test checks the UI launch path. Left running, eager/on-missing automation would start embedding and
    model-training runs on the test's drop as soon as it is ingested (CPU the other tests need), and the hourly
    catch-up schedule could launch its own run if the test spans the top of an hour. The landing sensor stays on:
    the drop is already a partition, so it has nothing to do.
    """
    stopped = []
    sensors = _graphql(base, """query($r: RepositorySelector!) { sensorsOrError(repositorySelector: $r) {
        ... on Sensors { results { id name sensorType sensorState { status } } } } }""", {"r": REPO_SELECTOR})
    for sn in sensors["sensorsOrError"]["results"]:
        if sn["sensorType"] in {"AUTO_MATERIALIZE", "AUTOMATION"} and sn["sensorState"]["status"] == "RUNNING":
            r = _graphql(base, """mutation($id: String) { stopSensor(id: $id) { __typename
                ... on StopSensorMutationResult { instigationState { status } } } }""", {"id": sn["id"]})
            assert r["stopSensor"]["instigationState"]["status"] == "STOPPED", r
            stopped.append(sn["name"])
    schedules = _graphql(base, """query($r: RepositorySelector!) { schedulesOrError(repositorySelector: $r) {
        ... on Schedules { results { id name scheduleState { status } } } } }""", {"r": REPO_SELECTOR})
    for sc in schedules["schedulesOrError"]["results"]:
        if sc["scheduleState"]["status"] == "RUNNING":
            r = _graphql(base, """mutation($id: String) { stopRunningSchedule(id: $id) { __typename
                ... on ScheduleStateResult { scheduleState { status } } } }""", {"id": sc["id"]})
            assert r["stopRunningSchedule"]["scheduleState"]["status"] == "STOPPED", r
            stopped.append(sc["name"])
    return stopped


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left of it (dagster dev can hang on exit)."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):  # it takes ~10 s to stop on 2 cores
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, or its zombie keeps the group "alive"
            try:
                os.killpg(pgid, 0)  # anyone left in the group?
            except ProcessLookupError:
                return
            time.sleep(0.5)
    proc.wait(timeout=5)


# ------------------------------------------------------------------ the test
def _shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def _dismiss_popups(driver) -> None:
    """Close the first-visit "Join the Dagster community" dialog (a fresh browser profile sees it once)."""
    from selenium.webdriver.common.by import By

    for b in driver.find_elements(By.XPATH, "//div[@role='dialog']//button[normalize-space()='Skip']"):
        if b.is_displayed():
            b.click()


def _visible(driver, by, sel):
    return [e for e in driver.find_elements(by, sel) if e.is_displayed()]


def test_materialize_a_drop_from_the_ui(dagster_dev, browser):
    try:
        _materialize_a_drop_from_the_ui(dagster_dev, browser)
    except BaseException:
        try:
            _shot(browser, "99_failure.png")
            (ARTIFACTS / "99_failure.html").write_text(browser.page_source)
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
        raise


def _materialize_a_drop_from_the_ui(dagster_dev, browser):
    from selenium.webdriver.common.by import By

    base, drop, log = dagster_dev["base"], dagster_dev["drop"], dagster_dev["log"]
    d = browser
    timings = {}
    t0 = time.monotonic()

    # 1. the asset graph: the global lineage (groups may be collapsed into one node each once several domains
    # exist), then the ingest group's graph, where raw_pairs is a node
    d.get(f"{base}/asset-groups")
    _wait("the global asset lineage", lambda: _visible(d, By.XPATH, "//*[normalize-space()='Global asset lineage']")
          and _visible(d, By.CSS_SELECTOR, "svg foreignObject"), 90)
    time.sleep(1.0)  # the community dialog pops up a moment after the first paint
    _dismiss_popups(d)
    time.sleep(0.5)
    _shot(d, "01_asset_lineage.png")
    d.get(f"{base}/locations/clip_assets/asset-groups/ingest")
    node_sel = "svg foreignObject [data-tooltip='raw_pairs']"
    _wait("the raw_pairs node in the ingest graph", lambda: _visible(d, By.CSS_SELECTOR, node_sel)
          and _visible(d, By.CSS_SELECTOR, "svg foreignObject [data-tooltip='rejected_pairs']"), 90)
    _dismiss_popups(d)
    time.sleep(0.5)
    _shot(d, "02_ingest_graph.png")
    timings["graph"] = time.monotonic() - t0

    # 2. navigate to raw_pairs: select its node, follow "View in Asset Catalog" from the side panel
    _visible(d, By.CSS_SELECTOR, node_sel)[0].click()
    view = _wait("the 'View in Asset Catalog' link", lambda: _visible(
        d, By.XPATH, "//*[self::a or self::button][normalize-space()='View in Asset Catalog']"), 30)[0]
    href = view.get_attribute("href")
    if href:  # an anchor (it may open a new tab when clicked): follow it in this tab
        d.get(href)
    else:
        view.click()
    _wait("the raw_pairs asset page", lambda: "/assets/raw_pairs" in d.current_url and _visible(
        d, By.XPATH, "//button[starts-with(normalize-space(), 'Materialize')]"), 60)
    _dismiss_popups(d)

    # 3. Materialize -> (confirm the multi-asset notice) -> pick the drop -> Launch 1 run
    _visible(d, By.XPATH, "//button[starts-with(normalize-space(), 'Materialize')]")[0].click()

    def launch_dialog_or_notice():
        confirm = _visible(d, By.XPATH, "//div[@role='dialog']//button[normalize-space()='Confirm']")
        if confirm:  # "Additional assets will be materialized": rejected_pairs comes along
            confirm[0].click()
            return None
        return _visible(d, By.XPATH, "//div[@role='dialog'][.//*[starts-with(normalize-space(), "
                                     "'Launch runs to materialize')]]")

    dialog = _wait("the launch dialog", launch_dialog_or_notice, 60)[0]
    dialog.find_element(By.CSS_SELECTOR, "[aria-haspopup='dialog']").click()  # the partition picker
    filt = _wait("the partition filter", lambda: _visible(
        d, By.CSS_SELECTOR, "[data-radix-popper-content-wrapper] input[placeholder='Filter partitions']"), 30)[0]
    filt.send_keys(drop)
    item = _wait(f"partition {drop} in the picker", lambda: [
        m for m in _visible(d, By.CSS_SELECTOR, "[data-radix-popper-content-wrapper] [role='menuitem']")
        if m.text.strip() == drop], 30)[0]
    item.click()
    # close the picker by clicking the dialog's title, leaving the selection in place
    dialog.find_element(By.XPATH, ".//*[starts-with(normalize-space(), 'Launch runs to materialize')]").click()
    launch = _wait("an enabled 'Launch 1 run' button", lambda: [
        b for b in _visible(d, By.XPATH, "//div[@role='dialog']//button[normalize-space()='Launch 1 run']")
        if b.is_enabled()], 30)[0]
    assert drop in dialog.text, dialog.text
    _shot(d, "03_launch_dialog.png")
    launched_at = time.time()
    launch.click()
    timings["launch"] = time.monotonic() - t0

    # 4. the run: find it through the UI's GraphQL endpoint, wait for success
    query = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { __typename
        ... on Runs { results { runId status jobName creationTime tags { key value } } } } }"""

    def our_run():
        runs = _graphql(base, query, {"tags": [{"key": "dagster/partition", "value": drop}]})["runsOrError"]["results"]
        mine = [r for r in runs if r["creationTime"] >= launched_at - 5 and not any(
            t["key"] in {"dagster/schedule_name", "dagster/sensor_name"} for t in r["tags"])]
        return mine[-1] if mine else None  # oldest matching (results are newest first)

    run = _wait("the run launched from the UI", our_run, 60, log=log)
    run_id = run["runId"]

    def finished():
        r = _graphql(base, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                     {"id": run_id})["runOrError"]
        if r["status"] in {"FAILURE", "CANCELED"}:
            raise Stop(f"run {run_id} ended {r['status']}: see {base}/runs/{run_id} and {log}")
        return r["status"] == "SUCCESS"

    try:
        _wait(f"run {run_id} to succeed", finished, RUN_TIMEOUT_S, every=2.0, log=log)
    except (AssertionError, Stop):
        d.get(f"{base}/runs/{run_id}")
        time.sleep(3)
        _shot(d, "04_run_failed.png")
        raise
    timings["run"] = time.monotonic() - t0

    d.get(f"{base}/runs/{run_id}")
    _wait("'Success' on the run page", lambda: _visible(d, By.XPATH, "//*[normalize-space()='Success']"), 60)
    time.sleep(2)  # let the Gantt chart and the log table paint
    _shot(d, "04_run_success.png")

    d.get(f"{base}/assets/raw_pairs")
    _wait("raw_pairs' latest materialization", lambda: _visible(d, By.XPATH, "//*[contains(text(), 'rows_seen')]")
          or _visible(d, By.XPATH, f"//*[contains(text(), '{drop}')]"), 60)
    _dismiss_popups(d)
    time.sleep(1)
    _shot(d, "05_asset_materialized.png")

    # 5. what the run did, read back from the instance and the warehouse
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(dagster_dev["dagster_home"]))
    try:
        assert drop in instance.get_materialized_partitions(dg.AssetKey("raw_pairs"))
        assert drop in instance.get_materialized_partitions(dg.AssetKey("rejected_pairs"))
        dagster_run = instance.get_run_by_id(run_id)
        assert dagster_run.tags.get("dagster/partition") == drop
    finally:
        instance.dispose()
    assert list((dagster_dev["home"] / "warehouse" / "raw_pairs" / f"drop={drop}").glob("*.parquet"))
    print(f"\n[e2e] run {run_id}: " + ", ".join(f"{k} at {v:.0f}s" for k, v in timings.items()))
    _curator_views(dagster_dev, d)


def _score_by_hand(home: Path, drop: str) -> None:
    """pair_scores + kl_stats of an ingested drop in their schemas (seeded numbers; tests/score_tables.py)."""
    import pyarrow.parquet as pq
    from score_tables import write_scores

    from clip_assets.io.warehouse import partition_dir

    uids = pq.read_table(partition_dir("raw_pairs", drop, home), columns=["uid"])["uid"].to_pylist()
    write_scores(home, drop, uids)


def _materialize_from_its_page(base: str, d, asset: str, log: Path) -> str:
    """Click "Materialize" on an unpartitioned asset's page; wait for the run it launched to succeed."""
    from selenium.webdriver.common.by import By

    d.get(f"{base}/assets/{asset}")
    xpath = "//button[starts-with(normalize-space(), 'Materialize')]"
    _wait(f"the Materialize button of {asset}", lambda: _visible(d, By.XPATH, xpath), 60)
    _dismiss_popups(d)
    launched_at = time.time()

    def click() -> bool:  # found again on each try: the page may re-render the button (a stale element)
        _visible(d, By.XPATH, xpath)[0].click()
        return True

    _wait(f"a click on the Materialize button of {asset}", click, 30)
    query = """{ runsOrError(limit: 10) { ... on Runs { results { runId status creationTime
        assetSelection { path } } } } }"""

    def launched():
        for b in _visible(d, By.XPATH, "//div[@role='dialog']//button[normalize-space()='Confirm']"):
            b.click()  # "Are you sure?": its upstream scores were written outside Dagster, so never materialized
        runs = _graphql(base, query)["runsOrError"]["results"]
        return next((r["runId"] for r in runs if r["creationTime"] >= launched_at - 5
                     and [asset] in [a["path"] for a in r["assetSelection"] or []]), None)

    run_id = _wait(f"the run of {asset} launched from its page", launched, 60, log=log)

    def finished():
        r = _graphql(base, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                     {"id": run_id})["runOrError"]
        if r["status"] in {"FAILURE", "CANCELED"}:
            raise Stop(f"run {run_id} of {asset} ended {r['status']}: see {base}/runs/{run_id} and {log}")
        return r["status"] == "SUCCESS"

    _wait(f"run {run_id} of {asset} to succeed", finished, RUN_TIMEOUT_S, every=2.0, log=log)
    return run_id


def _latest_metadata(base: str, asset: str) -> dict[str, str]:
    """label -> value (Markdown/path) of the asset's latest materialization, read through GraphQL."""
    q = """query($k: AssetKeyInput!) { assetOrError(assetKey: $k) { ... on Asset { assetMaterializations(limit: 1) {
        metadataEntries { label ... on MarkdownMetadataEntry { mdStr } ... on PathMetadataEntry { path } } } } } }"""
    (mat,) = _graphql(base, q, {"k": {"path": [asset]}})["assetOrError"]["assetMaterializations"]
    return {e["label"]: e.get("mdStr") or e.get("path") for e in mat["metadataEntries"]}


def _show_asset_page(base: str, d, asset: str, needle: str) -> None:
    """The asset's page with its latest materialization's metadata, where ``needle`` is shown inline."""
    from selenium.webdriver.common.by import By

    d.get(f"{base}/assets/{asset}?view=events")
    found = _wait(f"'{needle}' inline on {asset}'s page", lambda: _visible(
        d, By.XPATH, f"//*[contains(normalize-space(), '{needle}') and not(*)]"), 60)
    _dismiss_popups(d)
    time.sleep(1.0)
    d.execute_script("arguments[0].scrollIntoView({block: 'center'});"  # vertically only: keep the labels
                     "for (let e = arguments[0]; e; e = e.parentElement) e.scrollLeft = 0;", found[0])
    time.sleep(0.5)


def _curator_views(dev: dict, d) -> None:
    """curated_subsets from the UI: its inline summary, a contact sheet, and since-last after a second drop."""
    from selenium.webdriver.common.by import By

    from clip_assets.io.ingest import ingest_drop
    from clip_assets.world import write_drops

    base, home, log = dev["base"], dev["home"], dev["log"]
    _score_by_hand(home, dev["drop"])
    _materialize_from_its_page(base, d, "curated_subsets", log)
    meta = _latest_metadata(base, "curated_subsets")
    assert len(meta["summary"]) < 1000 and "data:image/png;base64," in meta["summary"]  # shown inline by the UI
    _show_asset_page(base, d, "curated_subsets", "pairs from 1 drop, 8 subsets")
    inline = [i for i in _visible(d, By.CSS_SELECTOR, "img[src^='data:image/png']") if i.size["width"] > 50]
    assert inline, "the summary's plot is not shown inline on curated_subsets' page"
    _shot(d, "06_asset_summary.png")

    report = Path(meta["report"])
    sheet = json.loads((report.parent / "sheets" / "subset-kl_text-kept_near.json").read_text())
    assert sheet["count"] == len(sheet["uids"]) > 0 and sheet["subset"] == "kl_text"
    d.get(report.as_uri())
    img = _wait("the kl_text sheet in the report", lambda: _visible(
        d, By.CSS_SELECTOR, "img[src='sheets/subset-kl_text-kept_near.png']"), 30)[0]
    d.execute_script("arguments[0].scrollIntoView({block: 'start'})", img)  # loading="lazy": load it first
    _wait("the sheet image to load", lambda: d.execute_script("return arguments[0].complete && "
                                                             "arguments[0].naturalWidth > 0", img), 30)
    time.sleep(0.5)
    _shot(d, "07_contact_sheet.png")

    # a second drop arrives (ingested here, the landing sensor stopped first), is scored, curated_subsets again
    print(f"\n[e2e] stopped for the second drop: {_stop_sensor(base, 'landing_sensor')}")
    (path,) = write_drops(home / "landing", drops=1, pairs=150, seed=3, shard_size=150, start=1)
    ingest_drop(path, home=home)
    _score_by_hand(home, path.name)
    _materialize_from_its_page(base, d, "curated_subsets", log)
    since = _latest_metadata(base, "curated_subsets")["since_last"]
    assert f"drops added: {path.name}" in since and len(since) < 1000 and "| kl_text | changed |" in since
    _show_asset_page(base, d, "curated_subsets", "since the last materialization")
    _shot(d, "08_since_last.png")
    d.get(Path(_latest_metadata(base, "curated_subsets")["report"]).as_uri() + "#since-the-last-materialization")
    _wait("the since-last table in the report", lambda: _visible(
        d, By.XPATH, f"//p[contains(normalize-space(), 'drops added: {path.name}')]"), 30)
    time.sleep(0.5)
    _shot(d, "09_since_last_report.png")


def _stop_sensor(base: str, name: str) -> str:
    """Stop one sensor by name with the UI toggle's mutation."""
    sensors = _graphql(base, """query($r: RepositorySelector!) { sensorsOrError(repositorySelector: $r) {
        ... on Sensors { results { id name sensorState { status } } } } }""", {"r": REPO_SELECTOR})
    (sn,) = [x for x in sensors["sensorsOrError"]["results"] if x["name"] == name]
    if sn["sensorState"]["status"] == "RUNNING":
        r = _graphql(base, """mutation($id: String) { stopSensor(id: $id) { __typename
            ... on StopSensorMutationResult { instigationState { status } } } }""", {"id": sn["id"]})
        assert r["stopSensor"]["instigationState"]["status"] == "STOPPED", r
    return name


def test_install_skips_with_a_reason_where_it_cannot_install(monkeypatch, tmp_path):
    """No chromium and no way to install it: a skip that says why, never a failure."""
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv("CLIP_ASSETS_NO_APT", "1")
    with pytest.raises(pytest.skip.Exception, match="CLIP_ASSETS_NO_APT"):
        install_chromium()
    monkeypatch.delenv("CLIP_ASSETS_NO_APT")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    if shutil.which("apt-get"):
        with pytest.raises(pytest.skip.Exception, match="not run as root"):
            install_chromium()
