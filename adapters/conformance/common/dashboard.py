"""Drives rumor's web dashboard in headless Chromium (Selenium), as a person
would, and checks what the page shows against the node's DNS.

usage: /usr/bin/python3 dashboard.py --url http://127.0.0.1:PORT --token T
           --dns-port N --name NAME [--magnet LINK --infohash IH]
           [--files N] [--torrent-file PATH] [--expect-partial] [--skip-torrents] [--allow-polling]
           [--artifacts DIR] [--timeout S]

Steps (each prints "ok: ..." when it passes; the first failure prints
"FAIL: ...", saves a screenshot and the page into --artifacts, exits 1):
  page     loads, nothing fetched from another origin, no horizontal
           scrolling at a phone's width (390 px) in any view, event stream live
           (or, with --allow-polling, the page says it polls)
  cluster  the members table lists this node, alive
  records  adds an A record through the form (the token form appears on the
           first write and takes the token), dig answers it; the TTL counts
           down; a record written through the API shows up by itself; an MX
           record too, then deleted from its row
  torrents sets the session's limits, adds the magnet link, watches the progress bar reach 100%, pauses
           it, opens its details (skips a file, sets a limit), removes it
           (files kept); uploads the .torrent file paused, removes it
  refused  forgets the token; a write is refused on the page (#error shows
           the node's message) with a wrong token and with none
Debian: chromium, chromium-driver, python3-selenium.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
except ImportError as e:  # the Rust side checks first; this is the backstop
    sys.exit("FAIL: selenium is missing (%s): apt-get install python3-selenium" % e)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class Failed(Exception):
    pass


def step(msg):
    print("ok: " + msg, flush=True)


def wait(what, check, limit=20.0, every=0.1):
    """Polls check() until it returns something truthy; that value, or Failed."""
    end = time.time() + limit
    last = None
    while True:
        try:
            v = check()
            if v:
                return v
        except WebDriverException as e:  # an element replaced under us: ask again
            last = e
        if time.time() > end:
            raise Failed("timed out after %.0f s waiting for %s%s" % (limit, what, " (%s)" % last if last else ""))
        time.sleep(every)


def fresh(fn, limit=3.0):
    """fn(), asked again while it reads an element the page has just replaced."""
    end = time.time() + limit
    while True:
        try:
            return fn()
        except StaleElementReferenceException:
            if time.time() > end:
                raise
            time.sleep(0.05)


def dig(port, name, rtype="A"):
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), "+short", "+time=2", "+tries=1", name, rtype],
        capture_output=True, text=True, timeout=15,
    )
    return out.stdout.split()


def dig_status(port, name):
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", name, "A"],
        capture_output=True, text=True, timeout=15,
    )
    return out.stdout.split("status: ")[1].split(",")[0] if "status: " in out.stdout else "NO ANSWER"


def api_get(p, path):
    with urllib.request.urlopen(p.url + path, timeout=10) as r:
        return json.loads(r.read())


class Page:
    def __init__(self, driver, url):
        self.d = driver
        self.url = url

    def by_id(self, i):
        return self.d.find_element(By.ID, i)

    def css(self, sel):
        return self.d.find_elements(By.CSS_SELECTOR, sel)

    def visible(self, i):
        els = self.d.find_elements(By.ID, i)
        return bool(els) and els[0].is_displayed()

    def tab(self, view):
        self.by_id("tab-" + view).click()
        wait("the %s view" % view, lambda: self.visible("view-" + view), 5)

    def type_into(self, i, text):
        e = self.by_id(i)
        e.clear()
        e.send_keys(text)

    def error_text(self):
        return self.by_id("error-text").text if self.visible("error") else ""

    def add_record(self, name, rtype, ttl, data):
        self.tab("records")
        self.type_into("record-name", name)
        Select(self.by_id("record-type")).select_by_value(rtype)
        self.type_into("record-ttl", str(ttl))
        self.type_into("record-data", data)
        self.by_id("record-submit").click()

    def record_row(self, name, rtype):
        rows = self.css('tr[data-testid="record"][data-name="%s"][data-type="%s"]' % (name, rtype))
        return rows[0] if rows else None

    def torrent_card(self, ih):
        cards = self.css('[data-testid="torrent"][data-infohash="%s"]' % ih)
        return cards[0] if cards else None


def check_page(p, a):
    p.d.get(p.url + "/")
    wait("the page's script to run", lambda: p.by_id("live").text != "")
    if a.allow_polling:
        # Without a stream the page must say so and poll instead.
        mode = wait("the page to be live or polling",
                    lambda: p.by_id("live").text if p.by_id("live").text in ("live", "polling every 2 s") else None, 15)
        step("the page loads; updates: %s" % mode)
    else:
        wait("the event stream (#live says live)", lambda: p.by_id("live").text == "live", 15)
        step("the page loads and its event stream is live")
    origin = p.url.rstrip("/")
    resources = p.d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [r for r in resources if not r.startswith(origin + "/")]
    if outside:
        raise Failed("the page loaded something from outside the node: %s" % outside)
    step("nothing loaded from outside the node (%d resources)" % len(resources))
    p.d.set_window_size(390, 844)
    try:
        for view in ("cluster", "records", "torrents"):
            p.tab(view)
            time.sleep(0.3)
            sw, iw = p.d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            if sw > iw + 1:
                raise Failed("the %s view scrolls sideways at 390 px: %d px wide" % (view, sw))
    finally:
        p.d.set_window_size(1280, 900)
    step("every view fits a 390 px phone screen")


def check_cluster(p):
    p.tab("cluster")
    wait("this node in the members table",
         lambda: [r for r in p.css('tr[data-testid="member"]') if "this node" in r.text], 10)
    state = fresh(lambda: [r for r in p.css('tr[data-testid="member"]') if "this node" in r.text][0]
                  .find_element(By.CSS_SELECTOR, '[data-testid="member-state"]').text)
    if state != "alive":
        raise Failed("this node's state is %r, not alive" % state)
    wait("the members count", lambda: p.by_id("stat-alive").text.isdigit(), 10)
    wait("gossip rates", lambda: "msg/s" in p.by_id("stat-gossip-out").text, 10)
    step("the cluster view lists this node, alive (%s alive)" % p.by_id("stat-alive").text)


def check_records(p, a):
    name = a.name
    p.add_record(name, "A", 300, "10.9.8.7")
    # No token is stored yet and the node has one: the token form opens.
    wait("the token form on the first write", lambda: p.visible("token-dialog"), 10)
    p.type_into("token-input", a.token)
    p.by_id("token-save").click()
    wait("the token form to close", lambda: not p.visible("token-dialog"), 5)
    wait("the new record's row", lambda: p.record_row(name, "A"), 10)
    text = fresh(lambda: p.record_row(name, "A").text)
    if "10.9.8.7" not in text:
        raise Failed("the row shows %r" % text)
    if p.error_text():
        raise Failed("an error shows after a good write: %s" % p.error_text())
    if p.by_id("token-status").text != "token set":
        raise Failed("the token badge says %r" % p.by_id("token-status").text)
    step("the record form asked for the token and added %s A" % name)
    wait("dig to answer %s" % name, lambda: "10.9.8.7" in dig(a.dns_port, name), 10)
    step("dig @127.0.0.1 -p %d %s answers 10.9.8.7" % (a.dns_port, name))

    def ttl_seconds():
        text = fresh(lambda: p.record_row(name, "A").find_element(By.CSS_SELECTOR, '[data-testid="record-ttl"]').text)
        total = 0
        for part in text.split():
            total += int(part[:-1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[part[-1]]
        return total

    first = ttl_seconds()
    wait("the TTL to count down", lambda: ttl_seconds() <= first - 2, 6)
    if not 280 <= first <= 300:
        raise Failed("a fresh 300 s record shows %d s left" % first)
    step("the TTL counts down (%d s, then %d s)" % (first, ttl_seconds()))

    # A write from elsewhere shows up without a reload (the event stream,
    # or the 2 s poll when there is none).
    other = "api." + name
    req = urllib.request.Request(
        p.url + "/add", method="POST", data=json.dumps({"name": other, "ips": ["10.9.8.9"], "ttl": 300}).encode(),
        headers={"Authorization": "Bearer " + a.token},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status != 200:
            raise Failed("POST /add answered %d" % r.status)
    wait("a record written through the API to show on the page", lambda: p.record_row(other, "A"), 6)
    step("a record written through the API appeared on the page by itself")

    mx = "10 mail.%s" % name
    p.add_record(name, "MX", 120, mx)
    wait("the MX row", lambda: p.record_row(name, "MX"), 10)
    if p.visible("token-dialog"):
        raise Failed("the token form opened again although a token is stored")
    answer = wait("dig MX", lambda: dig(a.dns_port, name, "MX"), 10)
    if answer[:2] != ["10", "mail.%s." % name]:
        raise Failed("dig MX says %r" % answer)
    step("an MX record added through the form is answered: %s" % " ".join(answer))
    fresh(lambda: p.record_row(name, "MX").find_element(By.CSS_SELECTOR, '[data-testid="record-delete"]').click())
    wait("the MX row to go", lambda: p.record_row(name, "MX") is None, 10)
    wait("dig MX to be empty", lambda: dig(a.dns_port, name, "MX") == [], 10)
    if p.record_row(name, "A") is None:
        raise Failed("deleting the MX set took the A set too")
    step("the MX record deleted from its row is gone from DNS; the A record stays")


def check_torrents(p, a):
    ih = a.infohash
    p.tab("torrents")
    wait("the torrent session", lambda: p.visible("torrent-form"), 10)
    if p.visible("torrents-none"):
        raise Failed("the page says %r" % p.by_id("torrents-none").text)
    # The session's limits, through the form above the list.
    wait("the session form filled from the node", lambda: p.by_id("session-max-active").get_attribute("value") != "", 10)
    p.type_into("session-max-active", "4")
    p.type_into("session-limit-up", "2048")
    p.by_id("session-save").click()
    wait("the session settings to apply",
         lambda: (lambda s: s["max_active_downloads"] == 4 and s["upload_limit"] == 2048 * 1024)(api_get(p, "/session")), 10)
    if p.error_text():
        raise Failed("setting the session limits: %s" % p.error_text())
    step("the session form set 4 downloads at once and a 2 MiB/s upload limit (PATCH /session)")
    p.type_into("torrent-link", a.magnet)
    p.by_id("torrent-submit").click()
    card = wait("the torrent's card", lambda: p.torrent_card(ih), 15)
    if p.error_text():
        raise Failed("adding the magnet link: %s" % p.error_text())
    step("the magnet link was added: %s" % card.find_element(By.CSS_SELECTOR, '[data-testid="torrent-name"]').text)
    seen = []

    def complete():
        bar = p.torrent_card(ih).find_element(By.CSS_SELECTOR, '[data-testid="torrent-progress"]')
        v = float(bar.get_attribute("value") or 0)
        if not seen or seen[-1] != v:
            seen.append(v)
        return v >= 1.0

    wait("the progress bar to reach 100%", complete, a.download_timeout, 0.2)
    if a.expect_partial and not any(0 < v < 1 for v in seen):
        raise Failed("the bar never showed a partial download, only %s (are updates live?)" % seen)
    card = p.torrent_card(ih)
    pct = card.find_element(By.CSS_SELECTOR, '[data-testid="torrent-pct"]').text
    if pct != "100.0%":
        raise Failed("the bar is full but the label says %r" % pct)
    wait("the seeding state", lambda: p.torrent_card(ih).get_attribute("data-state") == "seeding", 15)
    step("the progress bar reached 100%% (values seen: %s), state seeding" %
         ", ".join("%.0f%%" % (v * 100) for v in seen[:8]))

    p.torrent_card(ih).find_element(By.CSS_SELECTOR, '[data-testid="torrent-pause"]').click()
    wait("the paused state", lambda: p.torrent_card(ih).get_attribute("data-state") == "paused", 10)
    resume = p.torrent_card(ih).find_element(By.CSS_SELECTOR, '[data-testid="torrent-resume"]')
    if not resume.is_displayed():
        raise Failed("a paused torrent shows no Resume button")
    step("paused from its card")

    p.torrent_card(ih).find_element(By.CSS_SELECTOR, '[data-testid="torrent-details"]').click()
    wait("the details panel", lambda: p.visible("details"), 5)
    files = wait("the file list", lambda: p.css('#files-body tr[data-testid="file"]'), 10)
    if len(files) != a.files:
        raise Failed("the details list %d files, the torrent has %d" % (len(files), a.files))
    step("its details list its %d files" % len(files))
    # Skip the last file and set a download limit, through the panel.
    last = len(files) - 1
    fresh(lambda: Select(p.css('#files-body select[data-index="%d"]' % last)[0]).select_by_value("0"))
    wait("the apply button", lambda: p.by_id("files-save").is_enabled(), 5)
    p.by_id("files-save").click()
    wait("the file selection to apply",
         lambda: api_get(p, "/torrents/" + ih)["files"][last]["priority"] == 0, 10)
    if p.error_text():
        raise Failed("setting the file selection: %s" % p.error_text())
    p.type_into("limit-down", "100")
    p.by_id("limits-save").click()
    wait("the limit to apply", lambda: api_get(p, "/torrents/" + ih)["download_limit"] == 100 * 1024, 10)
    p.by_id("details-close").click()
    step("the details panel set file %d to skip and a 100 KiB/s download limit (PATCH)" % last)

    p.torrent_card(ih).find_element(By.CSS_SELECTOR, '[data-testid="torrent-remove"]').click()
    wait("the remove dialog", lambda: p.visible("remove-dialog"), 5)
    if p.by_id("remove-data").is_selected():
        raise Failed("deleting the data is ticked by default")
    p.by_id("remove-confirm").click()
    wait("the card to go", lambda: p.torrent_card(ih) is None, 10)
    if p.error_text():
        raise Failed("removing: %s" % p.error_text())
    wait("the empty list note", lambda: p.visible("torrents-empty"), 5)
    step("removed (files kept)")

    if a.torrent_file:
        # The same torrent again, uploaded as a .torrent file, paused.
        p.by_id("torrent-paused").click()
        p.by_id("torrent-file").send_keys(os.path.abspath(a.torrent_file))
        p.by_id("torrent-submit").click()
        wait("the uploaded torrent's card", lambda: p.torrent_card(ih), 15)
        if p.error_text():
            raise Failed("uploading the .torrent: %s" % p.error_text())
        wait("the paused state", lambda: p.torrent_card(ih).get_attribute("data-state") == "paused", 10)
        if p.by_id("torrent-file").get_attribute("value"):
            raise Failed("the file input keeps the file after the upload")
        p.torrent_card(ih).find_element(By.CSS_SELECTOR, '[data-testid="torrent-remove"]').click()
        wait("the remove dialog", lambda: p.visible("remove-dialog"), 5)
        p.by_id("remove-confirm").click()
        wait("the card to go", lambda: p.torrent_card(ih) is None, 10)
        step("a .torrent file uploaded with 'start paused' is added paused, then removed")


def check_refused(p, a):
    refused = "refused." + a.name
    p.by_id("token-clear").click()
    wait("the token badge to say no token", lambda: p.by_id("token-status").text == "no token", 5)
    # A wrong token: refused, the node's message on the page, the form again.
    p.add_record(refused, "A", 300, "10.6.6.6")
    wait("the token form", lambda: p.visible("token-dialog"), 10)
    p.type_into("token-input", "wrong-token-wrong-token")
    p.by_id("token-save").click()
    msg = wait("the refusal on the page", lambda: p.error_text(), 10)
    if "401" not in msg or "Bearer" not in msg or "not accepted" not in msg:
        raise Failed("the refusal with a wrong token reads %r" % msg)
    wait("the token form again", lambda: p.visible("token-dialog"), 5)
    step("a wrong token is refused on the page: %s" % msg)
    # No token at all.
    p.by_id("token-cancel").click()
    wait("the token form to close", lambda: not p.visible("token-dialog"), 5)
    msg = p.error_text()
    if "401" not in msg or "Authorization: Bearer" not in msg:
        raise Failed("the refusal without a token reads %r" % msg)
    if not p.by_id("error").is_displayed():
        raise Failed("#error is not visible")
    step("a write without the token is refused on the page: %s" % msg)
    if p.record_row(refused, "A") is not None:
        raise Failed("the refused record shows in the table")
    status = dig_status(a.dns_port, refused)
    if status != "NXDOMAIN":
        raise Failed("dig %s says %s, not NXDOMAIN" % (refused, status))
    step("the refused record is not in DNS (NXDOMAIN)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--dns-port", type=int, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--magnet")
    ap.add_argument("--infohash")
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--torrent-file", help="the same torrent as a .torrent file, to upload")
    ap.add_argument("--download-timeout", type=float, default=120)
    ap.add_argument("--expect-partial", action="store_true",
                    help="the bar must show a value between 0 and 100%% on its way (a rate-limited download)")
    ap.add_argument("--artifacts", default=".")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--allow-polling", action="store_true",
                    help="the node may have no event stream: the page must then say it polls")
    ap.add_argument("--skip-torrents", action="store_true",
                    help="for a node without --downloads: check the page says so instead")
    a = ap.parse_args()

    def too_long(signum, frame):
        raise Failed("the whole run took over %d s" % a.timeout)

    signal.signal(signal.SIGALRM, too_long)
    signal.alarm(a.timeout)
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.path.exists(path):
            sys.exit("FAIL: %s is missing: apt-get install %s" % (path, pkg))
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    p = Page(driver, a.url.rstrip("/"))
    code = 0
    try:
        check_page(p, a)
        check_cluster(p)
        check_records(p, a)
        if a.skip_torrents:
            p.tab("torrents")
            msg = wait("the no-session note", lambda: p.visible("torrents-none") and p.by_id("torrents-none").text, 10)
            if "torrent session" not in msg:
                raise Failed("the torrents view says %r" % msg)
            step("the torrents view says: %s" % msg)
        else:
            check_torrents(p, a)
        check_refused(p, a)
        print("PASS", flush=True)
    except (Failed, WebDriverException, AssertionError) as e:
        code = 1
        print("FAIL: %s" % e, flush=True)
        try:
            os.makedirs(a.artifacts, exist_ok=True)
            driver.save_screenshot(os.path.join(a.artifacts, "dashboard-failure.png"))
            with open(os.path.join(a.artifacts, "dashboard-failure.html"), "w") as f:
                f.write(driver.page_source)
            print("saved dashboard-failure.png and .html in %s" % a.artifacts, flush=True)
            for entry in driver.get_log("browser"):
                print("browser console: %s" % json.dumps(entry), flush=True)
        except Exception as e2:  # the browser may be the thing that broke
            print("could not save the page: %s" % e2, flush=True)
    finally:
        signal.alarm(0)
        driver.quit()
    sys.exit(code)


if __name__ == "__main__":
    main()
