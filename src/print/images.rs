//! `kubenode image`'s output: `image ls`'s table, one line per pulled or imported image, sizes
//! as crictl prints them, and the pull progress drawn on a terminal.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kubenode_runtime::image::{Image, PullEvent};

/// `REF DIGEST SIZE`, for a pulled or imported image.
pub fn image_line(image: &Image) -> String {
    format!(
        "{} {} {}",
        image.reference,
        image.manifest_digest,
        human_size(image.size)
    )
}

/// `kubenode image ls`: reference, manifest digest and compressed size.
pub fn images_table(images: &[Image]) -> String {
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            vec![
                i.reference.clone(),
                i.manifest_digest.clone(),
                human_size(i.size),
            ]
        })
        .collect();
    super::table::render(&["REF", "DIGEST", "SIZE"], &rows)
}

/// Sizes as `crictl images` shows them (decimal units, 4 significant digits).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = if value >= 1000.0 {
        0
    } else {
        3 - value.max(1.0).log10().floor() as usize
    };
    let s = format!("{value:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{}", UNITS[unit])
}

/// Per-blob progress lines on a terminal, redrawn in place.
pub struct TerminalProgress {
    state: Mutex<ProgressState>,
}

struct ProgressState {
    rows: Vec<(String, String)>,
    drawn: usize,
    last: Option<Instant>,
}

impl TerminalProgress {
    pub fn new() -> Self {
        TerminalProgress {
            state: Mutex::new(ProgressState {
                rows: Vec::new(),
                drawn: 0,
                last: None,
            }),
        }
    }

    pub fn update(&self, event: &PullEvent) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (key, text, force) = match event {
            PullEvent::Resolved {
                reference,
                manifest_digest,
                ..
            } => (
                reference.clone(),
                format!("resolved {}", short(manifest_digest)),
                true,
            ),
            PullEvent::BlobPresent { digest, .. } => {
                (digest.clone(), "already present".to_string(), true)
            }
            PullEvent::BlobProgress {
                digest,
                done,
                total,
            } => (
                digest.clone(),
                format!("downloading {} / {}", human_size(*done), human_size(*total)),
                false,
            ),
            PullEvent::BlobFetched { digest, size } => (
                digest.clone(),
                format!("downloaded {}", human_size(*size)),
                true,
            ),
            PullEvent::LayerReused { .. } | PullEvent::LayerUnpacked { .. } => return,
        };
        match st.rows.iter_mut().find(|(k, _)| *k == key) {
            Some(row) => row.1 = text,
            None => st.rows.push((key, text)),
        }
        if force
            || st
                .last
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(100))
        {
            st.last = Some(Instant::now());
            let mut out = std::io::stderr().lock();
            if st.drawn > 0 {
                let _ = write!(out, "\x1b[{}A", st.drawn);
            }
            for (key, text) in &st.rows {
                let _ = writeln!(out, "\r\x1b[2K{}: {text}", short(key));
            }
            st.drawn = st.rows.len();
        }
    }
}

fn short(digest: &str) -> &str {
    match digest.strip_prefix("sha256:") {
        Some(hex) => &hex[..hex.len().min(12)],
        None => digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_crictl() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_084_233), "1.084MB");
        assert_eq!(human_size(4_300_000), "4.3MB");
        assert_eq!(human_size(123_456_789), "123.5MB");
    }
}
