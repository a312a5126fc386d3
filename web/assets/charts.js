// Small canvas charts (no library, no CDN): bars with axis labels, sized for the device pixel ratio.
"use strict";
function drawBars(canvas, labels, values, options) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 46, bottom = 26, top = 10, right = 8;
  const plotW = width - left - right, plotH = height - top - bottom;
  // Gridlines at whole, round steps: the top is the next multiple of 4 × a power of ten.
  const peak = Math.max(4, ...values);
  const magnitude = Math.pow(10, Math.floor(Math.log10(peak / 4)));
  const max = Math.ceil(peak / (4 * magnitude)) * 4 * magnitude;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7488";
  ctx.strokeStyle = "#e3e7ef";
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + plotW, y); ctx.stroke();
    ctx.fillText(formatNumber((max * i) / 4), 2, y + 4);
  }
  if (values.length === 0) {
    ctx.fillText(options && options.empty || "—", left + plotW / 2 - 10, top + plotH / 2);
    return;
  }
  const slot = plotW / values.length;
  const gradient = ctx.createLinearGradient(0, top, 0, top + plotH);
  gradient.addColorStop(0, options && options.color || "#4f6cff");
  gradient.addColorStop(1, "#8a5cff");
  ctx.fillStyle = gradient;
  values.forEach((value, i) => {
    const h = (plotH * value) / max;
    ctx.fillRect(left + i * slot + slot * 0.15, top + plotH - h, Math.max(1, slot * 0.7), h);
  });
  ctx.fillStyle = "#6b7488";
  const every = Math.ceil(values.length / 8);
  labels.forEach((label, i) => {
    if (i % every === 0) ctx.fillText(label, left + i * slot, height - 8);
  });
}

function formatNumber(value) {
  if (value >= 1e9) return (value / 1e9).toFixed(1) + "G";
  if (value >= 1e6) return (value / 1e6).toFixed(1) + "M";
  if (value >= 1e4) return (value / 1e3).toFixed(1) + "k";
  return String(Math.round(value));
}
