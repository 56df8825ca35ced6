// The release page's script: picks the visitor's platform and shows the build the installers'
// rules chose for it at release time (the JSON in #kiln-choices, made by kiln's own ranking;
// no rule is repeated here), and makes the "Copy" buttons work. Without it the page is whole
// except for that recommendation.
"use strict";

(function () {
  function parseUserAgent(ua) {
    // The user agent string, for browsers without navigator.userAgentData (Firefox, Safari).
    if (/Android/i.test(ua)) {
      return { os: "android", arch: /x86_64|x64/i.test(ua) ? "x86_64" : "aarch64" };
    }
    if (/Windows/i.test(ua)) {
      return { os: "windows", arch: /ARM64|aarch64/i.test(ua) ? "aarch64" : "x86_64" };
    }
    if (/iPhone|iPad/i.test(ua)) { return null; }
    if (/Mac OS X|Macintosh/i.test(ua)) {
      // Safari and Firefox say "Intel Mac OS X" on Apple silicon too: take the Mac sold
      // since 2020 and say the choice can be switched.
      return { os: "macos", arch: "aarch64", guessed: true };
    }
    if (/Linux|X11|CrOS/i.test(ua)) {
      if (/aarch64|arm64|armv8/i.test(ua)) { return { os: "linux", arch: "aarch64" }; }
      if (/s390x/i.test(ua)) { return { os: "linux", arch: "s390x" }; }
      return { os: "linux", arch: "x86_64" };
    }
    return null;
  }

  function fromHints(v) {
    var os = { Windows: "windows", macOS: "macos", Linux: "linux", Android: "android",
               "Chrome OS": "linux", ChromeOS: "linux" }[v.platform];
    var arch = null;
    if (v.architecture === "arm" && v.bitness === "64") { arch = "aarch64"; }
    if (v.architecture === "x86" && v.bitness === "64") { arch = "x86_64"; }
    if (os === "android" && !arch) { arch = "aarch64"; }
    return os && arch ? { os: os, arch: arch, how: "client hints" } : null;
  }

  function detect() {
    var uad = navigator.userAgentData;
    var fallback = function () {
      var p = parseUserAgent(navigator.userAgent || "");
      if (p) { p.how = "user agent"; }
      return p;
    };
    if (uad && typeof uad.getHighEntropyValues === "function") {
      return uad.getHighEntropyValues(["architecture", "bitness", "platform"])
        .then(function (v) { return fromHints(v) || fallback(); }, fallback);
    }
    return Promise.resolve(fallback());
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function copyButton(value, label) {
    var b = el("button", { type: "button", "class": "copy", "aria-label": label }, "Copy");
    b.addEventListener("click", function () { copy(value, b); });
    return b;
  }

  function copy(value, button) {
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(value).then(done, function () { select(button); });
    } else {
      select(button);
    }
  }

  function select(button) {
    var code = button.parentNode.querySelector("code");
    if (!code) { return; }
    var range = document.createRange();
    range.selectNodeContents(code);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  function size(n) {
    if (n >= 1048576) { return (n / 1048576).toFixed(1) + " MiB"; }
    if (n >= 1024) { return (n / 1024).toFixed(1) + " KiB"; }
    return n + " B";
  }

  function main() {
    document.querySelectorAll("button.copy[data-copy]").forEach(function (b) {
      b.hidden = false;
      b.addEventListener("click", function () { copy(b.getAttribute("data-copy"), b); });
    });
    var data = document.getElementById("kiln-choices");
    var app = document.getElementById("yd-app");
    if (!data || !app) { return; }
    var choices = JSON.parse(data.textContent);
    var platform = document.getElementById("yd-platform");
    var gpu = document.getElementById("yd-gpu");
    var result = document.getElementById("yd-result");
    var detected = document.getElementById("yd-detected");
    app.hidden = false;

    function fillGpu() {
      var p = choices[platform.value];
      gpu.textContent = "";
      p.options.forEach(function (o) { gpu.appendChild(el("option", { value: o.key }, o.label)); });
    }

    function show() {
      var p = choices[platform.value];
      var o = p.options.filter(function (x) { return x.key === gpu.value; })[0] || p.options[0];
      result.textContent = "";
      result.setAttribute("data-platform", platform.value);
      result.setAttribute("data-option", o.key);
      if (!o.choice) {
        result.setAttribute("data-choice", "");
        result.appendChild(el("p", {}, "No build of this release for " + p.label + ": " + o.why));
        return;
      }
      result.setAttribute("data-choice", o.choice.id);
      var file = el("p", { "class": "rec-file" });
      var link = el("a", { href: o.choice.file, id: "yd-link" }, o.choice.file);
      file.appendChild(link);
      file.appendChild(document.createTextNode(" (" + size(o.choice.size) + ")"));
      result.appendChild(file);
      result.appendChild(el("p", { id: "yd-why" }, "Why: " + o.choice.id + ", " + o.why + "."));
      (o.notes || []).forEach(function (n) { result.appendChild(el("p", { "class": "muted" }, n)); });
      if (o.fallbacks && o.fallbacks.length) {
        result.appendChild(el("p", { "class": "muted" }, "If it does not start: " + o.fallbacks.join(", ")));
      }
      var sha = el("p", { "class": "cmd" });
      sha.appendChild(el("span", {}, "SHA-256"));
      sha.appendChild(el("code", { id: "yd-sha" }, o.choice.sha256));
      sha.appendChild(copyButton(o.choice.sha256, "Copy the SHA-256 of " + o.choice.file));
      result.appendChild(sha);
      result.appendChild(el("p", {}, "Or install it with one command (" + o.install.shell +
        "), which checks the signature and picks the same way on your machine:"));
      var cmd = el("p", { "class": "cmd" });
      cmd.appendChild(el("code", { id: "yd-command" }, o.install.command));
      cmd.appendChild(copyButton(o.install.command, "Copy the install command"));
      result.appendChild(cmd);
    }

    platform.addEventListener("change", function () { fillGpu(); show(); });
    gpu.addEventListener("change", show);
    detect().then(function (p) {
      var key = p ? p.os + "-" + p.arch : null;
      if (key && choices[key]) {
        platform.value = key;
        detected.textContent = "Detected from your browser (" + p.how + "): " + choices[key].label +
          (p.guessed ? ". Browsers do not say whether a Mac has an Intel processor: switch if it does." : ".") +
          " Choose your GPU if you have one.";
      } else {
        detected.textContent = "Your system could not be detected: choose it.";
      }
      fillGpu();
      show();
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", main);
  } else {
    main();
  }
}());
