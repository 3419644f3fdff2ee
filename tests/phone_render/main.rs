//! Looks right on a phone (issue 3, item 7): the approval mail's HTML part, drawn by headless
//! Chromium 390 px wide (an iPhone 12–15's CSS width), must not scroll sideways, and every answer
//! button must be at least 44 px tall (Apple's minimum tap target) and at least half the screen
//! wide; no text smaller than 12 px.
//!
//! Headless Chromium will not make a window narrower than 500 px, so the mail is drawn in a
//! 390 px wide iframe (`srcdoc`), which is its viewport: media queries and layout see 390 px. A
//! script in the wrapper page measures the laid-out mail and writes the result into the DOM, which
//! `chromium --dump-dom` prints; a second run takes the screenshot.
//!
//! For each sample mail (zh-CN and en, first mail and reminder) this writes to `target/phone/`:
//! `NAME.png` (full-page screenshot, 390 px wide: look at it), `NAME.json` (the measurements),
//! `NAME.html` / `NAME.txt` (the two parts), `NAME.eml` (the whole message) and
//! `NAME.phone.html` (the wrapper page).
//!
//! Run: `cargo test --test phone_render -- --ignored --nocapture`, or
//! `tests/phone_render/render.sh`, which installs Chromium first when it is missing. Chromium is
//! `chromium` (or `chromium-browser`, `google-chrome`) on the PATH, or `$RF_CHROMIUM`.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use replyflow::mail::compose::{self, ApprovalMail, Locale, MailKind, Templates};
use serde::Deserialize;

const WIDTH: u32 = 390;
const MIN_BUTTON_HEIGHT: f64 = 44.0;
const MIN_FONT_PX: f64 = 12.0;
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// The page Chromium draws: the mail in a 390 px wide iframe (headless Chromium will not make a
/// window narrower than 500 px, an iframe is the phone's viewport: media queries and layout see
/// 390 px), dark grey beside it. A script measures the laid-out mail once it has loaded, grows the
/// iframe to the mail's full height (for the screenshot), and writes its findings as JSON into
/// `<pre id="rf-phone-result">`, which `--dump-dom` shows.
const WRAPPER: &str = r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>phone WIDTH px</title></head>
<body style="margin:0;background:#4a4a4a;">
<iframe id="phone" srcdoc="SRCDOC" style="display:block;width:WIDTHpx;height:1400px;border:0;margin:0;padding:0;"></iframe>
<pre id="rf-phone-result" style="display:none"></pre>
<script>
window.addEventListener('load', function () {
  var frame = document.getElementById('phone'), win = frame.contentWindow, doc = frame.contentDocument;
  var root = doc.documentElement, body = doc.body, vw = win.innerWidth;
  var outside = [], smallest = 1000;
  Array.prototype.forEach.call(body.querySelectorAll('*'), function (e) {
    var r = e.getBoundingClientRect();
    if (r.width > 0 && (r.right > vw + 0.5 || r.left < -0.5)) {
      outside.push(e.tagName.toLowerCase() + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
    }
    var own = Array.prototype.some.call(e.childNodes, function (n) {
      return n.nodeType === 3 && n.textContent.trim() !== '';
    });
    if (own && r.width > 0) {
      smallest = Math.min(smallest, parseFloat(win.getComputedStyle(e).fontSize));
    }
  });
  var buttons = Array.prototype.map.call(doc.querySelectorAll('a[href^="mailto:"]'), function (a) {
    var r = a.getBoundingClientRect();
    return { label: a.textContent.trim(), width: r.width, height: r.height };
  });
  var result = {
    viewport_width: vw,
    scroll_width: Math.max(root.scrollWidth, body.scrollWidth),
    page_height: Math.ceil(body.getBoundingClientRect().height),
    smallest_font_px: smallest,
    outside_viewport: outside.slice(0, 20),
    buttons: buttons
  };
  frame.style.height = result.page_height + 'px';
  document.getElementById('rf-phone-result').textContent = JSON.stringify(result);
});
</script>
</body></html>
"#;

#[derive(Debug, Deserialize)]
struct Probe {
    viewport_width: f64,
    scroll_width: f64,
    page_height: u32,
    smallest_font_px: f64,
    outside_viewport: Vec<String>,
    buttons: Vec<Button>,
}

#[derive(Debug, Deserialize)]
struct Button {
    label: String,
    width: f64,
    height: f64,
}

#[test]
#[ignore = "needs chromium: run cargo test --test phone_render -- --ignored"]
fn approval_mail_fits_a_phone() {
    let chromium = find_chromium();
    let out = output_dir();
    std::fs::create_dir_all(&out).expect("create target/phone");
    let templates = Templates::load(None).expect("templates");
    let mut problems = Vec::new();
    for kind in [MailKind::Approval, MailKind::Reminder] {
        for locale in [Locale::ZhCn, Locale::En] {
            let mail = ApprovalMail::sample(locale, kind);
            let name = format!(
                "{}-{}",
                match kind {
                    MailKind::Approval => "approval",
                    MailKind::Reminder => "reminder",
                },
                locale.tag()
            );
            let (text, html) = compose::render_bodies(&templates, &mail).expect("render");
            let eml = compose::render(&templates, &mail).expect("render message");
            write(&out.join(format!("{name}.txt")), text.as_bytes());
            write(&out.join(format!("{name}.eml")), &eml);
            let page = out.join(format!("{name}.html"));
            write(&page, html.as_bytes());

            let phone_page = out.join(format!("{name}.phone.html"));
            let srcdoc = html.replace('&', "&amp;").replace('"', "&quot;");
            let wrapper = WRAPPER
                .replace("WIDTH", &WIDTH.to_string())
                .replace("SRCDOC", &srcdoc);
            write(&phone_page, wrapper.as_bytes());
            let probe = measure(&chromium, &phone_page);
            write(
                &out.join(format!("{name}.json")),
                format!("{probe:#?}\n").as_bytes(),
            );
            let png = out.join(format!("{name}.png"));
            screenshot(&chromium, &phone_page, &png, probe.page_height.max(400));
            println!(
                "{name}: viewport {} px, scroll width {} px, page {} px tall, buttons {:?}, smallest font {} px -> {}",
                probe.viewport_width,
                probe.scroll_width,
                probe.page_height,
                probe
                    .buttons
                    .iter()
                    .map(|b| format!("{} {}x{}", b.label, b.width, b.height))
                    .collect::<Vec<_>>(),
                probe.smallest_font_px,
                png.display()
            );

            if probe.viewport_width != f64::from(WIDTH) {
                problems.push(format!(
                    "{name}: the window is {} px wide, not {WIDTH}: the measurement is meaningless",
                    probe.viewport_width
                ));
            }
            if probe.scroll_width > f64::from(WIDTH) {
                problems.push(format!(
                    "{name}: scrolls sideways: content is {} px wide in a {WIDTH} px window; outside: {:?}",
                    probe.scroll_width, probe.outside_viewport
                ));
            }
            if !probe.outside_viewport.is_empty() {
                problems.push(format!(
                    "{name}: elements reach outside the viewport: {:?}",
                    probe.outside_viewport
                ));
            }
            if probe.buttons.len() != mail.outcomes.len() {
                problems.push(format!(
                    "{name}: {} buttons for {} outcomes",
                    probe.buttons.len(),
                    mail.outcomes.len()
                ));
            }
            for b in &probe.buttons {
                if b.height < MIN_BUTTON_HEIGHT {
                    problems.push(format!(
                        "{name}: button {:?} is {} px tall (< {MIN_BUTTON_HEIGHT})",
                        b.label, b.height
                    ));
                }
                if b.width < f64::from(WIDTH) / 2.0 {
                    problems.push(format!(
                        "{name}: button {:?} is only {} px wide: not a large tap target",
                        b.label, b.width
                    ));
                }
            }
            if probe.smallest_font_px < MIN_FONT_PX {
                problems.push(format!(
                    "{name}: text as small as {} px (< {MIN_FONT_PX})",
                    probe.smallest_font_px
                ));
            }
        }
    }
    println!("screenshots and measurements: {}", out.display());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `target/phone` (next to the `tmp` directory cargo gives integration tests).
fn output_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("phone")
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn find_chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("RF_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "no Chromium found on the PATH (chromium, chromium-browser, google-chrome) and RF_CHROMIUM \
         is not set: install it (Debian: apt-get install -y chromium) or run \
         tests/phone_render/render.sh, which does"
    );
}

/// Runs headless Chromium with `args` (after the common ones) and returns its stdout.
fn chromium(chromium: &Path, window_height: u32, args: &[String]) -> String {
    let profile = tempfile::tempdir().expect("temp profile dir");
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={WIDTH},{window_height}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
    // Chromium is killed if it hangs; stdout and stderr are read on threads so that a full pipe
    // cannot block it.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for chromium") {
            break status;
        }
        if started.elapsed() > CHROMIUM_TIMEOUT {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "chromium did not finish within {CHROMIUM_TIMEOUT:?}: {args:?}\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    assert!(
        status.success(),
        "chromium {args:?} failed ({status}):\n{stderr}"
    );
    stdout
}

fn file_url(path: &Path) -> String {
    let path = path.canonicalize().expect("absolute path");
    format!("file://{}", path.display())
}

fn measure(browser: &Path, page: &Path) -> Probe {
    let dom = chromium(browser, 1400, &["--dump-dom".to_string(), file_url(page)]);
    let marker = "id=\"rf-phone-result\"";
    let start = dom
        .find(marker)
        .and_then(|at| dom[at..].find('>').map(|gt| at + gt + 1))
        .unwrap_or_else(|| panic!("the probe wrote no result; the DOM was:\n{dom}"));
    let end = start + dom[start..].find("</pre>").expect("</pre>");
    let json = dom[start..end]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("probe result {json}: {e}"))
}

fn screenshot(browser: &Path, page: &Path, png: &Path, height: u32) {
    let _ = std::fs::remove_file(png);
    chromium(
        browser,
        height,
        &[format!("--screenshot={}", png.display()), file_url(page)],
    );
    assert!(png.is_file(), "no screenshot at {}", png.display());
}
