// The slide viewer: the slide as Deep Zoom tiles in OpenSeadragon (vendored), the nucleus
// density map and outlines as layers to toggle, the hotspots as buttons that pan to them,
// the pointer's position in slide millimetres. window.slideState is what the tests read.
(function () {
  "use strict";
  const root = document.getElementById("slide-viewer");
  const study = root.dataset.study;
  const analysis = root.dataset.analysis;
  const base = `/api/studies/${encodeURIComponent(study)}/slides/${analysis}`;
  const state = { opened: false, info: null, layers: {}, levels: { slide: [], outlines: [] } };
  window.slideState = state;

  function control(name, item) {
    const box = document.getElementById(name);
    const range = document.getElementById(`${name === "outlines" ? "outline" : name}-opacity`);
    const apply = () => item.setOpacity(box.checked ? Number(range.value) / 100 : 0);
    box.addEventListener("change", apply);
    range.addEventListener("input", apply);
    document.getElementById(`${name === "outlines" ? "outline" : name}-control`).hidden = false;
    apply();
    state.layers[name] = item;
  }

  function layer(viewer, options, name) {
    viewer.addTiledImage({
      ...options,
      x: 0,
      y: 0,
      success: (event) => control(name, event.item),
      error: (event) => { document.getElementById("status").textContent = `${name}: ${event.message}`; },
    });
  }

  function hotspots(viewer, info) {
    const list = document.getElementById("hotspots");
    info.hotspots.forEach((spot, rank) => {
      const item = document.createElement("li");
      const go = document.createElement("button");
      go.textContent = "show";
      go.addEventListener("click", () => {
        viewer.viewport.panTo(new OpenSeadragon.Point(spot.x, spot.y));
        viewer.viewport.zoomTo(viewer.world.getItemAt(0).imageToViewportZoom(1));
      });
      const where = spot.mm.map((v) => v.toFixed(2)).join(", ");
      const value = spot.density === null ? "" : `${Math.round(spot.density)} ${spot.unit}, `;
      item.append(`${value}at ${where} mm `, go);
      item.dataset.rank = String(rank + 1);
      list.append(item);
    });
    if (!info.hotspots.length) list.outerHTML = "<p>none reported</p>";
  }

  fetch(`${base}/info`).then((r) => r.json()).then((info) => {
    state.info = info;
    const viewer = OpenSeadragon({
      element: document.getElementById("slide"),
      prefixUrl: `${root.dataset.osd}/images/`,
      tileSources: `${base}.dzi`,
      drawer: "canvas",
      showNavigator: true,
      maxZoomPixelRatio: 4,
      visibilityRatio: 0.5,
      crossOriginPolicy: false,
    });
    state.viewer = viewer;
    viewer.addHandler("tile-loaded", (event) => {
      const which = viewer.world.getIndexOfItem(event.tiledImage) === 0 ? "slide" : "other";
      if (which === "slide") state.levels.slide.push(event.tile.level);
      else if (event.tiledImage === state.layers.outlines) state.levels.outlines.push(event.tile.level);
    });
    viewer.addOnceHandler("open", () => {
      state.opened = true;
      if (info.density) {
        layer(viewer, { tileSource: { type: "image", url: `${base}/density.png` }, width: info.density.width }, "density");
      }
      if (info.outlines) layer(viewer, { tileSource: `${base}-outlines.dzi`, width: 1 }, "outlines");
      hotspots(viewer, info);
    });
    const status = document.getElementById("status");
    new OpenSeadragon.MouseTracker({
      element: viewer.container,
      moveHandler: (event) => {
        const slide = viewer.world.getItemAt(0);
        if (!slide) return;
        const point = slide.viewerElementToImageCoordinates(event.position);
        if (point.x < 0 || point.y < 0 || point.x > info.width || point.y > info.height) return;
        status.textContent = info.mpp
          ? `pointer at ${(point.x * info.mpp / 1000).toFixed(3)}, ${(point.y * info.mpp / 1000).toFixed(3)} mm`
          : `pointer at pixel ${Math.round(point.x)}, ${Math.round(point.y)} (no microns per pixel)`;
      },
    });
  });
})();
