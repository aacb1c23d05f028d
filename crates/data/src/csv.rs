//! A small RFC 4180 reader (quoted fields, doubled quotes, CRLF or LF, newlines inside
//! quotes): all the E2E files need, without a dependency.

/// Records as (line number where the record starts, fields). Blank lines are skipped.
/// An unterminated quote is an error naming the line it opened on.
pub fn records(text: &str) -> Result<Vec<(usize, Vec<String>)>, (usize, String)> {
    let mut out = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut quote_line = 0;
    let mut line = 1;
    let mut record_line = 1;
    let mut chars = text.chars().peekable();
    let end_record = |fields: &mut Vec<String>, field: &mut String, record_line: usize, out: &mut Vec<(usize, Vec<String>)>| {
        fields.push(std::mem::take(field));
        let record = std::mem::take(fields);
        if !(record.len() == 1 && record[0].is_empty()) {
            out.push((record_line, record));
        }
    };
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => {
                in_quotes = true;
                quote_line = line;
            }
            ',' => fields.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                end_record(&mut fields, &mut field, record_line, &mut out);
                line += 1;
                record_line = line;
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err((quote_line, "unterminated quoted field".into()));
    }
    if !field.is_empty() || !fields.is_empty() {
        end_record(&mut fields, &mut field, record_line, &mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::records;

    #[test]
    fn quoted_fields_crlf_and_embedded_newlines() {
        let text = "mr,ref\r\n\"name[A], food[B]\",\"He said \"\"hi\"\"\"\r\n\r\nx,\"two\nlines\"\n";
        let rows = records(text).unwrap();
        assert_eq!(rows[0], (1, vec!["mr".to_string(), "ref".to_string()]));
        assert_eq!(rows[1], (2, vec!["name[A], food[B]".to_string(), "He said \"hi\"".to_string()]));
        assert_eq!(rows[2], (4, vec!["x".to_string(), "two\nlines".to_string()]));
        assert_eq!(records("a,\"open\n").unwrap_err().0, 1);
    }
}
