//! Image grids: images (clean inputs, perturbed inputs, perturbations) in named rows and
//! columns, each with a caption, written as SVG with every image embedded as a lossless
//! PNG, so that a reader (or a test) gets back the exact 8-bit pixels drawn.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// How pixel values map to colours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PixelScale {
    /// Values in [0, 1] as grey levels round(255·v), as the data stores them (ink white).
    Unit,
    /// Signed values on a diverging scale: 0 white, +`max_abs` full red, −`max_abs` full
    /// blue (a perturbation r; the caption gives its norm).
    Signed { max_abs: f32 },
}

impl PixelScale {
    /// The RGB colour of one value.
    pub fn rgb(self, v: f32) -> [u8; 3] {
        let byte = |t: f32| (255.0 * t).round().clamp(0.0, 255.0) as u8;
        match self {
            PixelScale::Unit => {
                let g = byte(v);
                [g, g, g]
            }
            PixelScale::Signed { max_abs } => {
                let t = if max_abs > 0.0 {
                    (v / max_abs).clamp(-1.0, 1.0)
                } else {
                    0.0
                };
                let fade = byte(1.0 - t.abs());
                if t >= 0.0 {
                    [255, fade, fade]
                } else {
                    [fade, fade, 255]
                }
            }
        }
    }
}

/// A square single-channel image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    pub side: usize,
    pub pixels: Vec<f32>,
    pub scale: PixelScale,
}

impl GrayImage {
    /// The image as an RGB PNG (8 bits, no interlace, filter 0 on every row).
    pub fn png(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(self.side * (1 + 3 * self.side));
        for row in self.pixels.chunks(self.side.max(1)) {
            raw.push(0);
            raw.extend(row.iter().flat_map(|&v| self.scale.rgb(v)));
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing to a Vec cannot fail.
        let idat = z
            .write_all(&raw)
            .and_then(|_| z.finish())
            .unwrap_or_default();
        let side = (self.side as u32).to_be_bytes();
        let mut ihdr = Vec::new();
        ihdr.extend(side);
        ihdr.extend(side);
        ihdr.extend([8, 2, 0, 0, 0]);
        let mut out = vec![137, 80, 78, 71, 13, 10, 26, 10];
        for (kind, data) in [(b"IHDR", ihdr), (b"IDAT", idat), (b"IEND", Vec::new())] {
            out.extend((data.len() as u32).to_be_bytes());
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(&data);
            out.extend(kind);
            out.extend(&data);
            out.extend(crc.sum().to_be_bytes());
        }
        out
    }
}

/// One image with its caption.
#[derive(Debug, Clone)]
pub struct ImageCell {
    pub image: GrayImage,
    pub caption: String,
}

/// One row of the grid: its label and one cell per column of every group.
#[derive(Debug, Clone)]
pub struct ImageRow {
    pub label: String,
    pub cells: Vec<ImageCell>,
}

/// Images under group headings (for instance one group per perturbation source) and
/// column headings repeated in every group (clean, perturbed, perturbation).
#[derive(Debug, Clone)]
pub struct ImageGrid {
    pub title: String,
    pub groups: Vec<String>,
    pub columns: Vec<String>,
    pub rows: Vec<ImageRow>,
}

const IMAGE: usize = 90;
const CELL: usize = 112;
const GROUP_GAP: usize = 24;
const ROW_LABEL: usize = 86;
const TOP: usize = 96;
const ROW: usize = IMAGE + 30;

impl ImageGrid {
    /// The SVG text. Every row must have one cell per column of every group.
    pub fn svg(&self) -> Result<String, String> {
        let per_row = self.groups.len() * self.columns.len();
        if let Some(r) = self.rows.iter().find(|r| r.cells.len() != per_row) {
            return Err(format!(
                "image grid row {:?} has {} cells, not {per_row}",
                r.label,
                r.cells.len()
            ));
        }
        super::check_title(&self.title, 90)?;
        let group_width = CELL * self.columns.len();
        let width = ROW_LABEL + self.groups.len() * (group_width + GROUP_GAP);
        let height = TOP + self.rows.len() * ROW + 10;
        let mut s = format!(
            r##"<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="{width}" height="{height}" fill="#FFFFFF"/>
"##
        );
        text(&mut s, width / 2, 30, 24, &self.title);
        for (g, name) in self.groups.iter().enumerate() {
            let x0 = ROW_LABEL + g * (group_width + GROUP_GAP);
            text(&mut s, x0 + group_width / 2, 60, 18, name);
            for (c, head) in self.columns.iter().enumerate() {
                text(&mut s, x0 + c * CELL + CELL / 2, 84, 15, head);
            }
        }
        for (r, row) in self.rows.iter().enumerate() {
            let y = TOP + r * ROW;
            text(&mut s, ROW_LABEL / 2, y + IMAGE / 2, 15, &row.label);
            for (i, cell) in row.cells.iter().enumerate() {
                let (g, c) = (i / self.columns.len(), i % self.columns.len());
                let x = ROW_LABEL + g * (group_width + GROUP_GAP) + c * CELL + (CELL - IMAGE) / 2;
                let _ = writeln!(
                    s,
                    r#"<image x="{x}" y="{y}" width="{IMAGE}" height="{IMAGE}" style="image-rendering:pixelated" href="data:image/png;base64,{}"/>"#,
                    base64(&cell.image.png())
                );
                text(&mut s, x + IMAGE / 2, y + IMAGE + 17, 13, &cell.caption);
            }
        }
        s.push_str("</svg>\n");
        Ok(s)
    }

    pub fn render(&self, path: &Path) -> Result<(), String> {
        std::fs::write(path, self.svg()?).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// A centred `<text>` at (x, y) in `size` px.
fn text(s: &mut String, x: usize, y: usize, size: usize, body: &str) {
    let escaped = body
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let _ = writeln!(
        s,
        r##"<text x="{x}" y="{y}" font-size="{size}" font-family="sans-serif" text-anchor="middle" fill="#000000">{escaped}</text>"##
    );
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
