"""A page opened in a real headless Chromium over the DevTools protocol: what it requested, what
its console said, whether its images loaded, and a screenshot of its first screen.

Used by the slow tier (tests/test_report.py). Chromium is Debian's `chromium` package, which
.ci/run installs; `chromium_path()` is None where it is missing, and the tests then skip, saying
why.
"""
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
START_TIMEOUT_S = 600   # hang guards: a busy machine may start Chromium slowly
LOAD_TIMEOUT_S = 600
VIEWPORT = (1280, 900)


def chromium_path():
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


class Page:
    """One DevTools connection to a page target: send a command, read events until a reply."""

    def __init__(self, url):
        import websocket   # websocket-client, in requirements.txt (tests)
        self.socket = websocket.create_connection(url, timeout=LOAD_TIMEOUT_S,
                                                  suppress_origin=True)
        self.next_id = 0
        self.events = []

    def send(self, method, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method, timeout=LOAD_TIMEOUT_S):
        deadline = time.time() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.time() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.events.append(json.loads(self.socket.recv()))


def devtools_port(profile, process):
    path = os.path.join(profile, "DevToolsActivePort")
    deadline = time.time() + START_TIMEOUT_S
    while not os.path.exists(path):
        if process.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"chromium did not start: {process.stderr.read()[-2000:]!r}")
        time.sleep(0.1)
    time.sleep(0.2)
    with open(path, encoding="utf-8") as handle:
        return int(handle.readline())


def opened_page(html_path):
    """{"requests": [URLs the page asked for], "errors": [console and log errors],
    "images": n, "images_loaded": n, "screenshot": PNG bytes of the first screen,
    "title": the page's title}."""
    # chromium's helper processes may still write to the profile as it is removed
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-extensions", "--disable-background-networking",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            port = devtools_port(profile, process)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = json.load(r)
            target = next(t for t in targets if t.get("type") == "page")
            page = Page(target["webSocketDebuggerUrl"])
            for domain in ("Page", "Network", "Runtime", "Log"):
                page.send(f"{domain}.enable")
            page.send("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0],
                      height=VIEWPORT[1], deviceScaleFactor=1, mobile=False)
            page.send("Page.navigate", url="file://" + os.path.abspath(html_path))
            page.wait_for("Page.loadEventFired")
            images = page.send("Runtime.evaluate", returnByValue=True, expression=(
                "[document.images.length, Array.from(document.images).filter("
                "i => i.complete && i.naturalWidth > 0).length, document.title]"))["result"]
            shot = page.send("Page.captureScreenshot", format="png")
            events = page.events
            page.socket.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)   # chromium and its helper processes
            process.wait()
    requests = [e["params"]["request"]["url"] for e in events
                if e.get("method") == "Network.requestWillBeSent"]
    errors = [e["params"]["entry"]["text"] for e in events
              if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
    errors += [str(e["params"].get("args")) for e in events
               if e.get("method") == "Runtime.consoleAPICalled"
               and e["params"].get("type") == "error"]
    errors += [str(e["params"]) for e in events if e.get("method") == "Runtime.exceptionThrown"]
    total, loaded, title = images["value"]
    return {"requests": requests, "errors": errors, "images": total, "images_loaded": loaded,
            "title": title, "screenshot": base64.b64decode(shot["data"])}
