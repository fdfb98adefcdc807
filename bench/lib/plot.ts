/**
 * The convergence plot: one panel per measurement, the cumulative distribution of racklb's
 * latencies against the floor's. Drawn into an RGB buffer and written as a PNG with node:zlib, with
 * a 5x7 bitmap font: no plotting package for one figure.
 */
import { writeFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';

type Rgb = [number, number, number];

const FONT: Record<string, string> = {
  A: '01110100011000111111100011000110001', B: '11110100011000111110100011000111110', C: '01110100011000010000100001000101110',
  D: '11110100011000110001100011000111110', E: '11111100001000011110100001000011111', F: '11111100001000011110100001000010000',
  G: '01110100011000010111100011000101111', H: '10001100011000111111100011000110001', I: '01110001000010000100001000010001110',
  J: '00111000100001000010000101001001100', K: '10001100101010011000101001001010001', L: '10000100001000010000100001000011111',
  M: '10001110111010110101100011000110001', N: '10001100011100110101100111000110001', O: '01110100011000110001100011000101110',
  P: '11110100011000111110100001000010000', Q: '01110100011000110001101011001001101', R: '11110100011000111110101001001010001',
  S: '01111100001000001110000010000111110', T: '11111001000010000100001000010000100', U: '10001100011000110001100011000101110',
  V: '10001100011000110001100010101000100', W: '10001100011000110101101011010101010', X: '10001100010101000100010101000110001',
  Y: '10001100011000101010001000010000100', Z: '11111000010001000100010001000011111',
  '0': '01110100011001110101110011000101110', '1': '00100011000010000100001000010001110', '2': '01110100010000100010001000100011111',
  '3': '11111000100010000010000011000101110', '4': '00010001100101010010111110001000010', '5': '11111100001111000001000011000101110',
  '6': '00110010001000011110100011000101110', '7': '11111000010001000100010000100001000', '8': '01110100011000101110100011000101110',
  '9': '01110100011000101111000010001001100', '.': '00000000000000000000000000110001100', ',': '00000000000000000000011000010001000',
  '-': '00000000000000011111000000000000000', ':': '00000011000110000000011000110000000', '(': '00010001000100001000010000010000010',
  ')': '01000001000001000010000100010001000', '/': '00000000010001000100010001000000000', '%': '11000110010001000100010001001100011',
  '=': '00000000001111100000111110000000000', '+': '00000001000010011111001000010000000', '>': '10000010000010000010001000100010000',
  ' ': '00000000000000000000000000000000000',
};

class Canvas {
  readonly data: Buffer;
  constructor(
    readonly width: number,
    readonly height: number,
  ) {
    this.data = Buffer.alloc(width * height * 3, 255);
  }

  set(x: number, y: number, c: Rgb): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = (Math.round(y) * this.width + Math.round(x)) * 3;
    this.data[i] = c[0];
    this.data[i + 1] = c[1];
    this.data[i + 2] = c[2];
  }

  rect(x: number, y: number, w: number, h: number, c: Rgb): void {
    for (let j = 0; j < h; j++) for (let i = 0; i < w; i++) this.set(x + i, y + j, c);
  }

  line(x0: number, y0: number, x1: number, y1: number, c: Rgb, thick = 1): void {
    const steps = Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0), 1);
    for (let s = 0; s <= steps; s++) {
      const x = x0 + ((x1 - x0) * s) / steps;
      const y = y0 + ((y1 - y0) * s) / steps;
      this.rect(Math.round(x - (thick - 1) / 2), Math.round(y - (thick - 1) / 2), thick, thick, c);
    }
  }

  text(x: number, y: number, s: string, c: Rgb, scale = 2): number {
    let cx = x;
    for (const ch of s.toUpperCase()) {
      const g = FONT[ch] ?? FONT[' ']!;
      for (let row = 0; row < 7; row++) for (let col = 0; col < 5; col++) if (g[row * 5 + col] === '1') this.rect(cx + col * scale, y + row * scale, scale, scale, c);
      cx += 6 * scale;
    }
    return cx - x;
  }

  textWidth(s: string, scale = 2): number {
    return s.length * 6 * scale;
  }

  png(): Buffer {
    const raw = Buffer.alloc((this.width * 3 + 1) * this.height);
    for (let y = 0; y < this.height; y++) {
      raw[y * (this.width * 3 + 1)] = 0; // filter: none
      this.data.copy(raw, y * (this.width * 3 + 1) + 1, y * this.width * 3, (y + 1) * this.width * 3);
    }
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(this.width, 0);
    ihdr.writeUInt32BE(this.height, 4);
    ihdr[8] = 8; // bit depth
    ihdr[9] = 2; // truecolour
    return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw, { level: 9 })), chunk('IEND', Buffer.alloc(0))]);
  }
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

export interface Panel {
  title: string;
  racklb: number[];
  floor: number[];
}

const BLUE: Rgb = [31, 90, 200];
const GREY: Rgb = [150, 150, 150];
const INK: Rgb = [40, 40, 40];
const GRID: Rgb = [225, 225, 225];

function niceStep(max: number, ticks: number): number {
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/** Cumulative distributions, racklb against the floor, one panel per measurement; x cut at the larger p99 (+20 %). */
export function convergencePlot(path: string, panels: Panel[], caption: string): void {
  const pw = 420;
  const ph = 360;
  const c = new Canvas(pw * panels.length, ph + 40);
  panels.forEach((p, k) => {
    const ox = k * pw;
    const left = ox + 70;
    const right = ox + pw - 20;
    const top = 60;
    const bottom = ph - 50;
    const sorted = (xs: number[]): number[] => [...xs].sort((a, b) => a - b);
    const a = sorted(p.racklb);
    const f = sorted(p.floor);
    const p99 = (xs: number[]): number => xs[Math.max(0, Math.ceil(0.99 * xs.length) - 1)] ?? 1;
    const xmax = Math.max(p99(a), p99(f), 1) * 1.2;
    const step = niceStep(xmax, 5);
    const X = (v: number): number => left + (Math.min(v, xmax) / xmax) * (right - left);
    const Y = (q: number): number => bottom - q * (bottom - top);
    for (let v = 0; v <= xmax; v += step) {
      c.line(X(v), top, X(v), bottom, GRID);
      const label = step < 1 ? v.toFixed(1) : String(Math.round(v));
      c.text(X(v) - c.textWidth(label, 1) / 2, bottom + 8, label, INK, 1);
    }
    for (const q of [0, 0.25, 0.5, 0.75, 0.9, 1]) {
      c.line(left, Y(q), right, Y(q), GRID);
      const label = String(q);
      c.text(left - 8 - c.textWidth(label, 1), Y(q) - 3, label, INK, 1);
    }
    c.line(left, bottom, right, bottom, INK);
    c.line(left, top, left, bottom, INK);
    c.text(left, 20, p.title, INK, 2);
    c.text(left - 60, top - 16, 'FRACTION OF TRIALS', INK, 1);
    c.text(left + (right - left) / 2 - c.textWidth('MS', 1) / 2, bottom + 22, 'MS', INK, 1);
    const curve = (xs: number[], color: Rgb): void => {
      let px = X(0);
      let py = Y(0);
      xs.forEach((v, i) => {
        const x = X(v);
        const y = Y((i + 1) / xs.length);
        c.line(px, py, x, py, color, 2);
        c.line(x, py, x, y, color, 2);
        px = x;
        py = y;
      });
    };
    curve(f, GREY);
    curve(a, BLUE);
    const med = (xs: number[]): number => xs[Math.max(0, Math.ceil(0.5 * xs.length) - 1)] ?? NaN;
    // Bottom right: a cumulative distribution leaves that corner empty.
    const lx = right - 150;
    const ly = bottom - 40;
    c.rect(lx, ly + 4, 14, 4, BLUE);
    c.text(lx + 20, ly, `RACKLB P50 ${med(a).toFixed(1)} MS`, INK, 1);
    c.rect(lx, ly + 18, 14, 4, GREY);
    c.text(lx + 20, ly + 14, `FLOOR  P50 ${med(f).toFixed(1)} MS`, INK, 1);
  });
  c.text(10, ph + 14, caption, INK, 1);
  writeFileSync(path, c.png());
}
