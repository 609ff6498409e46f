//! The comparison chart: one PNG with two panels, requests/s relative to the ceiling and
//! timestamps/s on a log scale, one bar per target. Drawn with plotters' bitmap backend; text
//! needs a TTF font (Debian's fonts-dejavu-core, installed on demand).

use std::path::Path;

use anyhow::{anyhow, Context};
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::harness::Summary;

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn register_font() -> anyhow::Result<()> {
    let path = match FONT_PATHS.iter().find(|p| Path::new(p).exists()) {
        Some(p) => *p,
        None => {
            let _ = std::process::Command::new("apt-get")
                .args(["install", "-y", "-qq", "fonts-dejavu-core"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status();
            FONT_PATHS
                .iter()
                .find(|p| Path::new(p).exists())
                .ok_or_else(|| anyhow!("no DejaVu font (apt-get install fonts-dejavu-core)"))?
        }
    };
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{path} is not a usable font"))
}

pub fn draw(summaries: &[Summary], path: &Path) -> anyhow::Result<()> {
    register_font()?;
    let rows = summaries.len() as i32;
    let row_h = 34;
    let top = 70;
    let height = (top + rows * row_h + 30) as u32;
    let width = 1400u32;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).context("fill")?;
    let title = TextStyle::from(("sans-serif", 20).into_font()).color(&BLACK);
    let text = TextStyle::from(("sans-serif", 14).into_font()).color(&BLACK);
    let small = TextStyle::from(("sans-serif", 12).into_font()).color(&RGBColor(80, 80, 80));
    root.draw(&Text::new(
        "timelock vs the ceiling and peers (same run, same machine; medians)",
        (20, 12),
        title.clone(),
    ))?;
    let label_w = 330;
    let panel_w = (width as i32 - label_w - 60) / 2;
    let left_x = label_w;
    let right_x = label_w + panel_w + 40;
    root.draw(&Text::new(
        "requests/s relative to the ceiling",
        (left_x, 44),
        text.clone(),
    ))?;
    root.draw(&Text::new(
        "timestamps/s (log scale, 10^3 .. 10^9)",
        (right_x, 44),
        text.clone(),
    ))?;
    let max_ratio = summaries
        .iter()
        .map(|s| s.ratio_to_ceiling)
        .filter(|r| r.is_finite())
        .fold(1.0f64, f64::max)
        .max(1.0);
    for (i, s) in summaries.iter().enumerate() {
        let y = top + i as i32 * row_h;
        let constant = s.target.starts_with("ceiling");
        let ours = constant || s.label.starts_with("timelock");
        let colour = if constant {
            RGBColor(150, 150, 150)
        } else if ours {
            RGBColor(31, 119, 180)
        } else {
            RGBColor(255, 127, 14)
        };
        root.draw(&Text::new(s.label.clone(), (10, y + 8), text.clone()))?;
        // Left: ratio to the ceiling.
        if s.ratio_to_ceiling.is_finite() {
            let len = (s.ratio_to_ceiling / max_ratio * (panel_w - 70) as f64) as i32;
            root.draw(&Rectangle::new(
                [(left_x, y + 4), (left_x + len.max(1), y + row_h - 6)],
                colour.filled(),
            ))?;
            root.draw(&Text::new(
                format!("{:.2}  ({:.0}/s)", s.ratio_to_ceiling, s.req_per_sec),
                (left_x + len + 6, y + 9),
                small.clone(),
            ))?;
        }
        // Right: timestamps/s, log scale from 10^3 to 10^9.
        if !s.target.starts_with("ceiling") && s.target != "lock+unlock" && s.ts_per_sec > 0.0 {
            let frac = ((s.ts_per_sec.log10() - 3.0) / 6.0).clamp(0.0, 1.0);
            let len = (frac * (panel_w - 90) as f64) as i32;
            root.draw(&Rectangle::new(
                [(right_x, y + 4), (right_x + len.max(1), y + row_h - 6)],
                colour.filled(),
            ))?;
            root.draw(&Text::new(
                human(s.ts_per_sec),
                (right_x + len + 6, y + 9),
                small.clone(),
            ))?;
        }
    }
    // The ceiling's line in the left panel.
    let x1 = left_x + (1.0 / max_ratio * (panel_w - 70) as f64) as i32;
    root.draw(&PathElement::new(
        vec![(x1, top - 4), (x1, top + rows * row_h)],
        BLACK.stroke_width(1),
    ))?;
    root.present().context("writing PNG")?;
    Ok(())
}

fn human(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} G/s", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1} M/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k/s", v / 1e3)
    } else {
        format!("{v:.0}/s")
    }
}
