//! kubectl's table layout: left-aligned columns padded with three spaces.

/// Renders a header and rows; the last column is not padded.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            s.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 3;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn pads_like_kubectl() {
        let out = super::render(
            &["NAME", "READY", "STATUS"],
            &[vec!["web".into(), "1/1".into(), "Running".into()]],
        );
        assert_eq!(out, "NAME   READY   STATUS\nweb    1/1     Running\n");
    }
}
