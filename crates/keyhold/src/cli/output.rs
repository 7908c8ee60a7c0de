//! Printing for the CLI: results to stdout, errors to stderr, tables and JSON.

use std::io::Write as _;

use super::OutputFormat;

/// Writes text to stdout; a closed pipe ends the output quietly.
pub(super) fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Prints a note for the person at the terminal to stderr, apart from the result on stdout.
pub(super) fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Prints an error and its causes to stderr.
pub(super) fn print_error(error: &anyhow::Error) {
    let mut message = format!("error: {error}");
    let mut shown = error.to_string();
    for cause in error.chain().skip(1) {
        // Many errors already include their cause in their own message.
        let cause = cause.to_string();
        if !shown.contains(&cause) {
            message.push_str(&format!("\n  caused by: {cause}"));
        }
        shown = cause;
    }
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

/// Prints rows as aligned columns with a header, or as a JSON array of objects.
pub(super) fn print_table(
    format: OutputFormat,
    headers: &[&str],
    rows: &[Vec<String>],
    json: &serde_json::Value,
) {
    match format {
        OutputFormat::Json => print(&format!("{json:#}\n")),
        OutputFormat::Text => print(&table(headers, rows)),
    }
}

/// Prints `label: value` lines, or a JSON object.
pub(super) fn print_record(
    format: OutputFormat,
    fields: &[(&str, String)],
    json: &serde_json::Value,
) {
    match format {
        OutputFormat::Json => print(&format!("{json:#}\n")),
        OutputFormat::Text => {
            let width = fields
                .iter()
                .map(|(label, _)| label.len())
                .max()
                .unwrap_or(0);
            let mut text = String::new();
            for (label, value) in fields {
                text.push_str(&format!("{label:<width$}  {}\n", printable(value)));
            }
            print(&text);
        }
    }
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut text = line(headers.to_vec());
    for row in rows {
        let cells: Vec<String> = row.iter().map(|cell| printable(cell)).collect();
        text.push_str(&line(cells.iter().map(String::as_str).collect()));
    }
    text
}

/// Replaces control characters, so stored names cannot move the cursor or forge lines on the
/// operator's terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_not_printed() {
        assert_eq!(printable("a\u{1b}[31mb\nc"), "a?[31mb?c");
    }

    #[test]
    fn table_aligns_columns() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned()],
            vec!["bbb".to_owned(), "x".to_owned()],
        ];
        assert_eq!(
            table(&["ID", "VALUE"], &rows),
            "ID   VALUE\na    long value\nbbb  x\n"
        );
    }
}
