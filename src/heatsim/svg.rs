//! Hand-written SVG line charts (axes, ticks, labels, legend), enough for
//! the simulator's plots without a plotting crate.

use std::fmt::Write;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Stroke colour (any SVG colour).
    pub color: String,
    /// Dashed line.
    pub dashed: bool,
    /// Draw a dot at every point.
    pub markers: bool,
    /// (x, y) points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic x axis (decades).
    pub log_x: bool,
    /// Logarithmic y axis (needs `y_range` with a positive minimum).
    pub log_y: bool,
    /// Y range override (min, max); else from the data, starting at 0.
    pub y_range: Option<(f64, f64)>,
    /// Extra room above the data for the legend, as a fraction of the
    /// highest value (0: none; automatic y range only).
    pub headroom: f64,
    /// Horizontal reference line (y, label).
    pub reference: Option<(f64, String)>,
    /// Lines.
    pub series: Vec<Series>,
}

const W: f64 = 720.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round step giving about `target` ticks over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = (span / target).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e4 {
        let e = v.abs().log10().round() as i32;
        if (10f64.powi(e) - v.abs()).abs() < 1e-9 * v.abs() {
            format!("1e{e}")
        } else {
            format!("{v:.0}")
        }
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Chart {
    /// The chart as an SVG document.
    pub fn render(&self) -> String {
        let pts = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut y1 = f64::NEG_INFINITY;
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        if !x0.is_finite() {
            (x0, x1, y1) = (0.0, 1.0, 1.0);
        }
        if let Some((r, _)) = &self.reference {
            y1 = y1.max(*r);
        }
        let tx = |x: f64| if self.log_x { x.max(1e-300).log10() } else { x };
        let (mut ax0, mut ax1) = if self.log_x {
            (tx(x0).floor(), tx(x1).ceil())
        } else {
            (x0, x1)
        };
        if ax1 <= ax0 {
            ax1 = ax0 + 1.0;
        }
        if !self.log_x {
            let st = nice_step(ax1 - ax0, 8.0);
            ax0 = (ax0 / st).floor() * st;
            ax1 = (ax1 / st).ceil() * st;
        }
        let (ay0, ay1) = match self.y_range {
            Some(r) => r,
            None => {
                let top = y1.max(1e-9) * (1.05 + self.headroom);
                let st = nice_step(top, 6.0);
                (0.0, (top / st).ceil() * st)
            }
        };
        let pw = W - LEFT - RIGHT;
        let ph = H - TOP - BOTTOM;
        let px = |x: f64| LEFT + (tx(x) - ax0) / (ax1 - ax0) * pw;
        let ty = |y: f64| if self.log_y { y.max(1e-300).log10() } else { y };
        let py = |y: f64| TOP + ph - (ty(y.clamp(ay0, ay1)) - ty(ay0)) / (ty(ay1) - ty(ay0)) * ph;

        let mut o = String::new();
        let _ = writeln!(
            o,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(o, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            o,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
            W / 2.0,
            esc(&self.title)
        );
        // grid and ticks
        let yticks: Vec<f64> = if self.log_y {
            let mut t = Vec::new();
            let mut e = ay0.log10().floor() as i32;
            while 10f64.powi(e) <= ay1 {
                for f in [1.0, 1.5, 2.0, 3.0, 5.0, 7.0] {
                    let y = f * 10f64.powi(e);
                    if y >= ay0 * (1.0 - 1e-9) && y <= ay1 * (1.0 + 1e-9) {
                        t.push(y);
                    }
                }
                e += 1;
            }
            t
        } else {
            let yst = nice_step(ay1 - ay0, 6.0);
            let mut t = Vec::new();
            let mut y = (ay0 / yst).ceil() * yst;
            while y <= ay1 + yst * 1e-9 {
                t.push(y);
                y += yst;
            }
            t
        };
        for y in yticks {
            let v = py(y);
            let _ = writeln!(
                o,
                r##"<line x1="{LEFT}" y1="{v:.1}" x2="{:.1}" y2="{v:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                v + 4.0,
                fmt_num(y)
            );
        }
        if self.log_x {
            let mut e = ax0 as i32;
            while e as f64 <= ax1 {
                let v = LEFT + (e as f64 - ax0) / (ax1 - ax0) * pw;
                let label = match e {
                    0 => "1".to_string(),
                    1 => "10".to_string(),
                    2 => "100".to_string(),
                    _ => format!(r#"10<tspan dy="-6" font-size="9">{e}</tspan>"#),
                };
                let _ = writeln!(
                    o,
                    r##"<line x1="{v:.1}" y1="{TOP}" x2="{v:.1}" y2="{:.1}" stroke="#e4e4e4"/><text x="{v:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
                    TOP + ph,
                    TOP + ph + 18.0
                );
                e += 1;
            }
        } else {
            let xst = nice_step(ax1 - ax0, 8.0);
            let mut x = ax0;
            while x <= ax1 + xst * 1e-9 {
                let v = LEFT + (x - ax0) / (ax1 - ax0) * pw;
                let _ = writeln!(
                    o,
                    r##"<line x1="{v:.1}" y1="{TOP}" x2="{v:.1}" y2="{:.1}" stroke="#e4e4e4"/><text x="{v:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                    TOP + ph,
                    TOP + ph + 18.0,
                    fmt_num(x)
                );
                x += xst;
            }
        }
        // axes
        let _ = writeln!(
            o,
            r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            H - 18.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            o,
            r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            esc(&self.y_label)
        );
        if let Some((r, label)) = &self.reference {
            let v = py(*r);
            let _ = writeln!(
                o,
                r##"<line x1="{LEFT}" y1="{v:.1}" x2="{:.1}" y2="{v:.1}" stroke="#888" stroke-dasharray="2,3"/><text x="{:.1}" y="{:.1}" fill="#666" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT + pw - 4.0,
                v - 4.0,
                esc(label)
            );
        }
        // lines
        for s in &self.series {
            let path: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let dash = if s.dashed {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let _ = writeln!(
                o,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
                path.join(" "),
                s.color
            );
            if s.markers {
                for &(x, y) in &s.points {
                    let _ = writeln!(
                        o,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"/>"#,
                        px(x),
                        py(y),
                        s.color
                    );
                }
            }
        }
        // legend
        let lx = LEFT + pw - 190.0;
        let mut ly = TOP + 16.0;
        let _ = writeln!(
            o,
            r##"<rect x="{:.1}" y="{:.1}" width="182" height="{:.1}" fill="white" fill-opacity="0.85" stroke="#ccc"/>"##,
            lx - 6.0,
            TOP + 4.0,
            self.series.len() as f64 * 18.0 + 6.0
        );
        for s in &self.series {
            let dash = if s.dashed {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let _ = writeln!(
                o,
                r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
                ly - 4.0,
                lx + 24.0,
                ly - 4.0,
                s.color,
                lx + 30.0,
                ly,
                esc(&s.name)
            );
            ly += 18.0;
        }
        o.push_str("</svg>\n");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_wellformed_document() {
        let c = Chart {
            title: "a < b & c".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            log_x: true,
            reference: Some((1.0, "1".into())),
            series: vec![Series {
                name: "s".into(),
                color: "red".into(),
                dashed: true,
                markers: true,
                points: vec![(1.0, 5.0), (10.0, 2.0), (1000.0, 1.1)],
            }],
            ..Default::default()
        };
        let s = c.render();
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
        assert!(s.contains("a &lt; b &amp; c"));
        assert_eq!(s.matches("<circle").count(), 3);
    }
}
