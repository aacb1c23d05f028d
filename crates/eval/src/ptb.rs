//! An approximation of what e2e-metrics feeds its COCO scorers (METEOR, ROUGE-L, CIDEr): the
//! Stanford CoreNLP 3.4.1 `PTBTokenizer -preserveLines -lowerCase` output with pycocoevalcap's
//! punctuation tokens removed. The Java tokenizer is a large lexer; this covers what E2E-style
//! English needs: punctuation split off words (inner hyphens, decimals and slashes kept),
//! clitics (`is n't`, `ca n't`, `it 's`), currency signs split from amounts, lowercasing. (The
//! fixtures show the command e2e-metrics runs does not respell `centre`.) Agreement with the
//! real tokenizer is checked on the fixtures (see tests/eval.rs).

/// Tokens pycocoevalcap removes after tokenizing.
const PUNCTUATIONS: [&str; 18] =
    ["\"", "''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".", "?", "!", ",", ":", "-", "--", "...", ";"];

/// Tokenize like the PTB tokenizer, lowercase, drop punctuation; tokens joined by single spaces.
pub fn tokenize(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        split_word(&word.to_lowercase(), &mut out);
    }
    out.retain(|t| !PUNCTUATIONS.contains(&t.as_str()));
    out.join(" ")
}

fn is_edge_punct(c: char) -> bool {
    matches!(c, '.' | ',' | ';' | ':' | '!' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '"' | '\'' | '`' | '-')
}

fn split_word(word: &str, out: &mut Vec<String>) {
    let chars: Vec<char> = word.chars().collect();
    let (mut start, mut end) = (0, chars.len());
    let mut head = Vec::new();
    while start < end && (is_edge_punct(chars[start]) || matches!(chars[start], '£' | '$' | '€')) {
        // `'s`-style clitics stay whole when they are the whole remaining word.
        let rest: String = chars[start..end].iter().collect();
        if CLITICS.contains(&rest.as_str()) {
            break;
        }
        head.push(chars[start].to_string());
        start += 1;
    }
    let mut tail = Vec::new();
    while end > start && is_edge_punct(chars[end - 1]) {
        tail.push(chars[end - 1].to_string());
        end -= 1;
    }
    tail.reverse();
    out.extend(head);
    if start < end {
        let core: String = chars[start..end].iter().collect();
        for piece in split_inner(&core) {
            split_clitic(&piece, out);
        }
    }
    out.extend(tail);
}

/// Commas/semicolons/`...` glued between letters (`riverside,it`) and currency inside a word.
fn split_inner(core: &str) -> Vec<String> {
    let mut s = String::new();
    let chars: Vec<char> = core.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let prev_alpha = i > 0 && chars[i - 1].is_alphabetic();
        let next = chars.get(i + 1).copied();
        match c {
            ',' | ';' | '!' | '?' | '(' | ')' | '"' if !(c == ',' && next.is_some_and(|n| n.is_ascii_digit()) && i > 0 && chars[i - 1].is_ascii_digit()) => {
                s.push(' ');
                s.push(c);
                s.push(' ');
            }
            '.' if prev_alpha && next.is_some_and(|n| n.is_alphabetic()) && !is_abbrev_like(&chars, i) => {
                s.push_str(" . ");
            }
            '£' | '$' | '€' => {
                s.push(' ');
                s.push(c);
                s.push(' ');
            }
            _ => s.push(c),
        }
    }
    s.split_whitespace().map(str::to_string).collect()
}

/// `u.s.`-like words keep their periods.
fn is_abbrev_like(chars: &[char], i: usize) -> bool {
    let before = chars[..i].iter().rev().take_while(|c| c.is_alphabetic()).count();
    let after = chars[i + 1..].iter().take_while(|c| c.is_alphabetic()).count();
    before == 1 && after == 1
}

const CLITICS: [&str; 6] = ["'s", "'re", "'ll", "'ve", "'m", "'d"];

fn split_clitic(piece: &str, out: &mut Vec<String>) {
    if piece == "cannot" {
        out.extend(["can".to_string(), "not".to_string()]);
        return;
    }
    if piece.len() > 3 && piece.ends_with("n't") {
        out.push(piece[..piece.len() - 3].to_string());
        out.push("n't".to_string());
        return;
    }
    for clitic in CLITICS {
        if piece.len() > clitic.len() && piece.ends_with(clitic) {
            out.push(piece[..piece.len() - clitic.len()].to_string());
            out.push(clitic.to_string());
            return;
        }
    }
    out.push(piece.to_string());
}

#[cfg(test)]
mod tests {
    use super::tokenize;

    #[test]
    fn ptb_like() {
        assert_eq!(tokenize("It isn't family-friendly, it's near \"The Bakers\"."), "it is n't family-friendly it 's near the bakers");
        assert_eq!(tokenize("Prices are £20-25 in the city centre."), "prices are £ 20-25 in the city centre");
    }
}
