// Upgrades the route's SVG map to a Leaflet map when a tile server is configured. With no
// tile URL (or no Leaflet, or no network) the SVG drawn by the server stays: the route and
// its stops are always visible.
(function () {
  "use strict";
  const figure = document.getElementById("route-map");
  if (!figure || !figure.dataset.tiles || typeof L === "undefined") { return; }
  const points = JSON.parse(figure.dataset.points || "[]");
  const depot = JSON.parse(figure.dataset.depot || "null");
  if (!depot) { return; }
  const holder = document.createElement("div");
  holder.className = "leaflet-holder";
  figure.insertBefore(holder, figure.firstChild);
  const map = L.map(holder);
  L.tileLayer(figure.dataset.tiles, { maxZoom: 19, attribution: figure.dataset.attribution || "" })
    .addTo(map);
  const path = [depot].concat(points).concat([depot]);
  L.polyline(path, { color: "#005eb8", weight: 3 }).addTo(map);
  L.marker(depot, { title: "Pharmacy" }).addTo(map);
  points.forEach(function (p, i) {
    L.circleMarker(p, { radius: 9, color: "#005eb8", fillColor: "#fff", fillOpacity: 1 })
      .bindTooltip(String(i + 1), { permanent: true, direction: "center" }).addTo(map);
  });
  map.fitBounds(L.latLngBounds(path), { padding: [20, 20] });
  const svg = figure.querySelector("svg");
  if (svg) { svg.hidden = true; }
}());
