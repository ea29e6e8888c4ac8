//! The overview's chart: succeeded and failed deliveries per hour as stacked bars, drawn as SVG on the server.

use courier_scheduler::activity::Activity;
use maud::{Markup, html};

const WIDTH: u32 = 480;
const HEIGHT: u32 = 96;
const BAR_GAP: u32 = 2;

/// Stacked bars, oldest hour on the left. The numbers are also in the `title` of each bar and in the figure's
/// caption, so the chart is readable without seeing it.
pub fn hourly(activity: &Activity, label: &str) -> Markup {
    let hours = activity.hourly.len().max(1) as u32;
    let peak = activity.hourly.iter().map(|h| h.succeeded + h.failed).max().unwrap_or(0).max(1);
    let bar = WIDTH / hours;
    let scale = |n: u64| ((n as f64 / peak as f64) * f64::from(HEIGHT)).round() as u32;
    let (ok, failed) = activity.hourly.iter().fold((0, 0), |(o, f), h| (o + h.succeeded, f + h.failed));
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT) role="img"
                aria-label=(format!("{label}: {ok} succeeded and {failed} failed in the last 24 hours")) {
                @for (i, h) in activity.hourly.iter().enumerate() {
                    @let x = i as u32 * bar;
                    @let ok_h = scale(h.succeeded);
                    @let failed_h = scale(h.failed);
                    g {
                        title { (h.hour.format("%H:00 UTC")) ": " (h.succeeded) " succeeded, " (h.failed) " failed" }
                        rect.ok x=(x) y=(HEIGHT - ok_h) width=(bar - BAR_GAP) height=(ok_h) {}
                        rect.failed x=(x) y=(HEIGHT - ok_h - failed_h) width=(bar - BAR_GAP) height=(failed_h) {}
                    }
                }
            }
            figcaption {
                span.key-ok { "■" } " " (ok) " succeeded · " span.key-failed { "■" } " " (failed) " failed · per hour, last 24 h"
            }
        }
    }
}
