//! PNG charts for reports (`hanse planner eval --out`, the benchmark comparison), drawn
//! here without a plotting stack: a pixel canvas, lines, bars, a 5x7 bitmap font, and a
//! small PNG encoder over miniz_oxide's deflate (already built for the workspace).

use miniz_oxide::deflate::compress_to_vec_zlib;

/// One line of a line chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: usize = 960;
const HEIGHT: usize = 540;
const LEFT: usize = 80;
const RIGHT: usize = 230;
const TOP: usize = 50;
const BOTTOM: usize = 70;
const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];
const GRID: [u8; 3] = [225, 225, 225];
/// Distinct colours for series, in order (a colour-blind-safe palette).
const PALETTE: [[u8; 3]; 8] = [
    [0, 114, 178],
    [230, 159, 0],
    [0, 158, 115],
    [204, 121, 167],
    [213, 94, 0],
    [86, 180, 233],
    [120, 120, 120],
    [240, 228, 66],
];

/// A line chart of `series` (y from 0), as PNG bytes.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Vec<u8> {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (x_min, x_max) = points
        .clone()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
    let y_max = points.map(|p| p.1).fold(0.0, f64::max);
    let (x_min, x_max) = if x_min < x_max {
        (x_min, x_max)
    } else {
        (0.0, 1.0)
    };
    let mut frame = Frame::new(title, x_label, y_label, nice_ceiling(y_max));
    frame.x_ticks(x_min, x_max);
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let pixels: Vec<(i64, i64)> = s
            .points
            .iter()
            .map(|&(x, y)| (frame.x_pixel(x, x_min, x_max), frame.y_pixel(y)))
            .collect();
        for pair in pixels.windows(2) {
            frame.canvas.line(pair[0], pair[1], colour);
        }
        frame.legend(i, &s.name, colour);
    }
    frame.canvas.png()
}

/// A grouped bar chart: one group per entry of `groups`, one bar per series in each
/// (`series[k].1[g]` is series k's value in group g), as PNG bytes.
pub fn bar_chart(
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[(String, Vec<f64>)],
) -> Vec<u8> {
    let y_max = series
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .fold(0.0, f64::max);
    let mut frame = Frame::new(title, "", y_label, nice_ceiling(y_max));
    let plot_width = WIDTH - LEFT - RIGHT;
    let group_width = plot_width / groups.len().max(1);
    let bar_width = (group_width * 4 / 5) / series.len().max(1);
    for (g, group) in groups.iter().enumerate() {
        let x0 = LEFT + g * group_width + group_width / 10;
        for (k, (_, values)) in series.iter().enumerate() {
            let Some(&value) = values.get(g) else {
                continue;
            };
            let top = frame.y_pixel(value).max(TOP as i64) as usize;
            let left = x0 + k * bar_width;
            frame.canvas.fill(
                left,
                top,
                bar_width.saturating_sub(1).max(1),
                HEIGHT - BOTTOM - top,
                PALETTE[k % PALETTE.len()],
            );
        }
        let label_x = LEFT + g * group_width + group_width / 2;
        frame
            .canvas
            .text_centred(label_x, HEIGHT - BOTTOM + 10, group, 1, BLACK);
    }
    for (k, (name, _)) in series.iter().enumerate() {
        frame.legend(k, name, PALETTE[k % PALETTE.len()]);
    }
    frame.canvas.png()
}

/// The smallest of 1, 2 or 5 times a power of ten at or above `y` (the y axis's top).
fn nice_ceiling(y: f64) -> f64 {
    if y <= 0.0 || !y.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(y.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&top| top >= y)
        .unwrap_or(10.0 * power)
}

/// A label for an axis value: few digits, no trailing zeros.
fn axis_label(value: f64) -> String {
    let text = if value.abs() >= 100.0 || value == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// The axes, grid, title and legend area of a chart.
struct Frame {
    canvas: Canvas,
    y_max: f64,
}

impl Frame {
    fn new(title: &str, x_label: &str, y_label: &str, y_max: f64) -> Frame {
        let mut canvas = Canvas::new(WIDTH, HEIGHT);
        canvas.text_centred(WIDTH / 2, 15, title, 2, BLACK);
        canvas.text_centred(
            LEFT + (WIDTH - LEFT - RIGHT) / 2,
            HEIGHT - 25,
            x_label,
            1,
            BLACK,
        );
        canvas.text(8, TOP - 18, y_label, 1, BLACK);
        let frame = Frame { canvas, y_max };
        let mut frame = frame;
        for step in 0..=5 {
            let value = y_max * step as f64 / 5.0;
            let y = frame.y_pixel(value) as usize;
            frame.canvas.fill(LEFT, y, WIDTH - LEFT - RIGHT, 1, GRID);
            let label = axis_label(value);
            frame.canvas.text(
                LEFT.saturating_sub(8 + 6 * label.len()),
                y.saturating_sub(3),
                &label,
                1,
                BLACK,
            );
        }
        frame
            .canvas
            .fill(LEFT, TOP, 1, HEIGHT - TOP - BOTTOM, BLACK);
        frame
            .canvas
            .fill(LEFT, HEIGHT - BOTTOM, WIDTH - LEFT - RIGHT, 1, BLACK);
        frame
    }

    fn y_pixel(&self, y: f64) -> i64 {
        let span = (HEIGHT - TOP - BOTTOM) as f64;
        (HEIGHT - BOTTOM) as i64 - (y / self.y_max * span).round() as i64
    }

    fn x_pixel(&self, x: f64, x_min: f64, x_max: f64) -> i64 {
        let span = (WIDTH - LEFT - RIGHT) as f64;
        LEFT as i64 + ((x - x_min) / (x_max - x_min) * span).round() as i64
    }

    fn x_ticks(&mut self, x_min: f64, x_max: f64) {
        for step in 0..=5 {
            let value = x_min + (x_max - x_min) * step as f64 / 5.0;
            let x = self.x_pixel(value, x_min, x_max) as usize;
            self.canvas.fill(x, HEIGHT - BOTTOM, 1, 5, BLACK);
            self.canvas
                .text_centred(x, HEIGHT - BOTTOM + 10, &axis_label(value), 1, BLACK);
        }
    }

    fn legend(&mut self, row: usize, name: &str, colour: [u8; 3]) {
        let x = WIDTH - RIGHT + 20;
        let y = TOP + 10 + row * 20;
        self.canvas.fill(x, y, 16, 8, colour);
        self.canvas.text(x + 24, y, name, 1, BLACK);
    }
}

/// An RGB image.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<[u8; 3]>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            pixels: vec![WHITE; width * height],
        }
    }

    fn set(&mut self, x: i64, y: i64, colour: [u8; 3]) {
        if (0..self.width as i64).contains(&x) && (0..self.height as i64).contains(&y) {
            self.pixels[y as usize * self.width + x as usize] = colour;
        }
    }

    fn fill(&mut self, x: usize, y: usize, width: usize, height: usize, colour: [u8; 3]) {
        for row in y..y + height {
            for column in x..x + width {
                self.set(column as i64, row as i64, colour);
            }
        }
    }

    /// A line two pixels thick from `a` to `b` (Bresenham).
    fn line(&mut self, a: (i64, i64), b: (i64, i64), colour: [u8; 3]) {
        let (mut x, mut y) = a;
        let dx = (b.0 - x).abs();
        let dy = -(b.1 - y).abs();
        let (sx, sy) = ((b.0 - x).signum(), (b.1 - y).signum());
        let mut error = dx + dy;
        loop {
            self.set(x, y, colour);
            self.set(x, y + 1, colour);
            if (x, y) == b {
                break;
            }
            let doubled = 2 * error;
            if doubled >= dy {
                error += dy;
                x += sx;
            }
            if doubled <= dx {
                error += dx;
                y += sy;
            }
        }
    }

    /// `text` with its top-left corner at (`x`, `y`), each font pixel `scale` pixels wide.
    fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, colour: [u8; 3]) {
        for (i, c) in text.chars().enumerate() {
            let rows = glyph(c);
            let left = x + i * 6 * scale;
            for (r, bits) in rows.iter().enumerate() {
                for column in 0..5 {
                    if bits & (0x10 >> column) != 0 {
                        self.fill(left + column * scale, y + r * scale, scale, scale, colour);
                    }
                }
            }
        }
    }

    fn text_centred(&mut self, x: usize, y: usize, text: &str, scale: usize, colour: [u8; 3]) {
        let width = text.chars().count() * 6 * scale;
        self.text(x.saturating_sub(width / 2), y, text, scale, colour);
    }

    /// The image as a PNG file: 8-bit RGB, each row unfiltered, deflated.
    fn png(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(self.height * (1 + 3 * self.width));
        for row in self.pixels.chunks(self.width) {
            raw.push(0);
            raw.extend(row.iter().flatten());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut header = Vec::new();
        header.extend((self.width as u32).to_be_bytes());
        header.extend((self.height as u32).to_be_bytes());
        header.extend([8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &header);
        chunk(&mut out, b"IDAT", &compress_to_vec_zlib(&raw, 6));
        chunk(&mut out, b"IEND", &[]);
        out
    }
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

/// The CRC-32 (ISO-HDLC) a PNG chunk ends with.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The 5x7 glyph of `c` (lower case drawn as upper case), one row per byte, the left
/// pixel in bit 4; a question mark for characters it lacks.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ' ' => [0; 7],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunks of a PNG file: (kind, data), each CRC checked.
    fn chunks(png: &[u8]) -> Vec<(String, Vec<u8>)> {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let mut rest = &png[8..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let body = &rest[4..8 + len];
            let crc = u32::from_be_bytes(rest[8 + len..12 + len].try_into().unwrap());
            assert_eq!(crc, crc32(body));
            out.push((
                String::from_utf8(body[..4].to_vec()).unwrap(),
                body[4..].to_vec(),
            ));
            rest = &rest[12 + len..];
        }
        out
    }

    fn inflate(stream: &[u8]) -> Vec<u8> {
        miniz_oxide::inflate::decompress_to_vec_zlib(stream).expect("a valid zlib stream")
    }

    #[test]
    fn the_chunk_checksum_matches_its_published_value() {
        // The CRC every PNG's IEND chunk ends with.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_canvas_round_trips_through_its_png() {
        let mut canvas = Canvas::new(300, 250);
        canvas.fill(10, 20, 3, 2, [1, 2, 3]);
        canvas.line((0, 0), (299, 249), [9, 9, 9]);
        let png = canvas.png();
        let chunks = chunks(&png);
        let kinds: Vec<&str> = chunks.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["IHDR", "IDAT", "IEND"]);
        assert_eq!(&chunks[0].1[..8], [0, 0, 1, 44, 0, 0, 0, 250]);
        let raw = inflate(&chunks[1].1);
        assert_eq!(raw.len(), 250 * (1 + 300 * 3));
        let pixel = |x: usize, y: usize| {
            let at = y * (1 + 900) + 1 + 3 * x;
            [raw[at], raw[at + 1], raw[at + 2]]
        };
        assert_eq!(pixel(11, 21), [1, 2, 3]);
        assert_eq!(pixel(0, 0), [9, 9, 9]);
        assert_eq!(pixel(299, 249), [9, 9, 9]);
        assert_eq!(pixel(200, 10), WHITE);
    }

    #[test]
    fn charts_draw_their_series_in_their_colours() {
        let series = [
            Series {
                name: "flat".into(),
                points: vec![(0.0, 1.0), (10.0, 1.0)],
            },
            Series {
                name: "rising".into(),
                points: vec![(0.0, 0.0), (10.0, 4.0)],
            },
        ];
        let png = line_chart("imbalance", "tick", "max/mean", &series);
        let raw = inflate(&chunks(&png)[1].1);
        assert!(
            png.len() < 100_000,
            "a chart deflates well: {} bytes",
            png.len()
        );
        let count = |colour: [u8; 3]| {
            raw.chunks(1 + 3 * WIDTH)
                .flat_map(|row| row[1..].chunks(3))
                .filter(|p| *p == colour)
                .count()
        };
        assert!(
            count(PALETTE[0]) > WIDTH - LEFT - RIGHT,
            "the flat line spans the plot"
        );
        assert!(count(PALETTE[1]) > WIDTH - LEFT - RIGHT);
        let bars = bar_chart(
            "cost",
            "cost",
            &["a".into(), "b".into()],
            &[("x".into(), vec![1.0, 2.0]), ("y".into(), vec![0.5, 0.0])],
        );
        assert_eq!(chunks(&bars).len(), 3);
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(12.0), 20.0);
        assert!((nice_ceiling(0.07) - 0.1).abs() < 1e-12);
        assert_eq!(axis_label(2.5), "2.5");
        assert_eq!(axis_label(1200.0), "1200");
    }
}
