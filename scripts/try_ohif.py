"""Try OHIF against a running medsight: unpack the OHIF viewer's prebuilt npm package, point
its app-config.js at medsight's DICOMweb with a clinician's personal API token, and serve it
on another origin (start medsight with --cors-origin http://127.0.0.1:PORT).

A trial for a developer's machine, not part of medsight: it runs `npm pack` (network), and
adds the bearer token to OHIF's requests from its config file, where a site would use OIDC.

Usage: python scripts/try_ohif.py --medsight http://127.0.0.1:8080 --token TOKEN [--port 3000]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import subprocess
import tarfile
import tempfile
from pathlib import Path

OHIF = "@ohif/app@3.13.2"

DATA_SOURCE = """  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'medsight',
    configuration: {
      friendlyName: 'medsight', name: 'medsight',
      wadoUriRoot: '%(root)s', qidoRoot: '%(root)s', wadoRoot: '%(root)s',
      qidoSupportsIncludeField: true, imageRendering: 'wadors', thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true, supportsFuzzyMatching: false, supportsWildcard: true,
      omitQuotationForMultipartRequest: true,
    },
  }],
  defaultDataSourceName: 'medsight',
"""
BEARER = """
(function () {  // medsight takes a clinician's API token as a bearer token
  const token = "%(token)s", origin = "%(origin)s";
  const open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url) {
    this._medsight = String(url).startsWith(origin); return open.apply(this, arguments); };
  XMLHttpRequest.prototype.send = function () {
    if (this._medsight) this.setRequestHeader("Authorization", "Bearer " + token);
    return send.apply(this, arguments); };
  const original = window.fetch;
  window.fetch = function (input, init) {
    const url = typeof input === "string" ? input : input.url;
    if (url.startsWith(origin)) {
      init = init || {};
      init.headers = Object.assign({}, init.headers, {Authorization: "Bearer " + token});
    }
    return original(input, init); };
})();
"""


def unpack(folder: Path) -> Path:
    packed = subprocess.run(
        ["npm", "pack", OHIF, "--pack-destination", str(folder)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    with tarfile.open(folder / packed) as archive:
        archive.extractall(folder, filter="data")
    return folder / "package" / "dist"


def configure(dist: Path, medsight: str, token: str) -> None:
    config = dist / "app-config.js"
    text = config.read_text()
    start, end = text.index("  dataSources: ["), text.index("  httpErrorHandler:")
    root = medsight.rstrip("/") + "/dicom-web"
    text = text[:start] + DATA_SOURCE % {"root": root} + text[end:]
    config.write_text(text + BEARER % {"token": token, "origin": medsight.rstrip("/") + "/"})


class SinglePage(http.server.SimpleHTTPRequestHandler):
    """Unknown paths get index.html (OHIF routes such as /viewer are client-side)."""

    def send_head(self):  # type: ignore[no-untyped-def]
        if not Path(self.translate_path(self.path.split("?")[0])).exists():
            self.path = "/index.html"
        return super().send_head()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--medsight", required=True, help="medsight's base URL")
    parser.add_argument("--token", required=True, help="a clinician's personal API token")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    dist = unpack(Path(tempfile.mkdtemp(prefix="ohif-")))
    configure(dist, args.medsight, args.token)
    handler = functools.partial(SinglePage, directory=str(dist))
    print(f"OHIF on http://127.0.0.1:{args.port}/ (start medsight with --cors-origin that)")
    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler).serve_forever()


if __name__ == "__main__":
    main()
