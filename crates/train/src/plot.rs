//! The loss curve as a PNG, written without an image library: a small RGB canvas, lines drawn
//! pixel by pixel, stored (uncompressed) in a zlib stream — a few hundred KB at most.

use std::path::Path;

const WIDTH: usize = 640;
const HEIGHT: usize = 360;
const MARGIN: usize = 30;

struct Canvas {
    pixels: Vec<[u8; 3]>,
}

impl Canvas {
    fn new() -> Self {
        Self { pixels: vec![[255, 255, 255]; WIDTH * HEIGHT] }
    }

    fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if (0..WIDTH as i64).contains(&x) && (0..HEIGHT as i64).contains(&y) {
            self.pixels[y as usize * WIDTH + x as usize] = color;
        }
    }

    /// Bresenham's line.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn dot(&mut self, (x, y): (i64, i64), color: [u8; 3]) {
        for dx in -2..=2 {
            for dy in -2..=2 {
                self.set(x + dx, y + dy, color);
            }
        }
    }
}

/// Plots training loss (black line) and dev loss (red dots) against the optimizer step.
pub fn plot_losses(path: &Path, train: &[(f64, f64)], dev: &[(f64, f64)]) -> std::io::Result<()> {
    let mut canvas = Canvas::new();
    let all = train.iter().chain(dev);
    let max_x = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let (min_y, max_y) = all.map(|p| p.1).filter(|y| y.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (min_y, max_y) = if min_y.is_finite() && max_y > min_y { (min_y, max_y) } else { (0.0, 1.0) };
    let to_pixel = |(x, y): (f64, f64)| {
        let px = MARGIN as f64 + x / max_x * (WIDTH - 2 * MARGIN) as f64;
        let py = (HEIGHT - MARGIN) as f64 - (y - min_y) / (max_y - min_y) * (HEIGHT - 2 * MARGIN) as f64;
        (px.round() as i64, py.round() as i64)
    };
    let grey = [160, 160, 160];
    let (left, bottom, right, top) = (MARGIN as i64, (HEIGHT - MARGIN) as i64, (WIDTH - MARGIN) as i64, MARGIN as i64);
    canvas.line((left, bottom), (right, bottom), grey);
    canvas.line((left, bottom), (left, top), grey);
    for pair in train.windows(2) {
        canvas.line(to_pixel(pair[0]), to_pixel(pair[1]), [0, 0, 0]);
    }
    for &point in dev {
        canvas.dot(to_pixel(point), [220, 30, 30]);
    }
    std::fs::write(path, encode_png(&canvas))
}

fn encode_png(canvas: &Canvas) -> Vec<u8> {
    let mut raw = Vec::with_capacity(HEIGHT * (1 + 3 * WIDTH));
    for row in canvas.pixels.chunks(WIDTH) {
        raw.push(0); // filter: none
        raw.extend(row.iter().flatten());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend((WIDTH as u32).to_be_bytes());
    header.extend((HEIGHT as u32).to_be_bytes());
    header.extend([8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    chunk(&mut png, b"IHDR", &header);
    chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend((data.len() as u32).to_be_bytes());
    let start = png.len();
    png.extend(kind);
    png.extend(data);
    let crc = crc32(&png[start..]);
    png.extend(crc.to_be_bytes());
}

/// A zlib stream of stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + byte as u32) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend(((b << 16) | a).to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { 0xEDB8_8320 ^ (crc >> 1) } else { crc >> 1 };
        }
    }
    !crc
}
