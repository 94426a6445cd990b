"""Repair runbook text that was decoded with the wrong codec somewhere along the way.

Runbooks reach us through copy and paste, wikis and e-mail, and emoji are the first casualty:
UTF-8 bytes read as Windows-1252 turn ✅ into "âœ…", and read as Mac Roman (old macOS tools,
some terminal exports) they turn ✅ into "‚úÖ" and 🚀 into "\\uf8ffüöÄ".

The one rule that matters here: clean text is never changed. Both repairs therefore only touch
character sequences whose re-encoded bytes form valid UTF-8 and decode to plausible characters;
everything else is returned as it came.
"""

from __future__ import annotations

import re
import unicodedata

import ftfy

__all__ = ["repair_mojibake"]

# Only the encoding repair: a runbook's curly quotes, ligatures, full-width characters and
# normalisation form are the author's choice, and lossy sequences are kept rather than
# replaced with U+FFFD so nothing the author wrote disappears.
_FTFY_ENCODING_ONLY = ftfy.TextFixerConfig(
    unescape_html=False,
    remove_terminal_escapes=False,
    fix_encoding=True,
    restore_byte_a0=True,
    replace_lossy_sequences=False,
    decode_inconsistent_utf8=True,
    fix_c1_controls=False,
    fix_latin_ligatures=False,
    fix_character_width=False,
    uncurl_quotes=False,
    fix_line_breaks=False,
    fix_surrogates=False,
    remove_control_chars=False,
    normalization=None,
    explain=False,
)


def _decoded(codec: str, first: int, last: int) -> str:
    return "".join(bytes([b]).decode(codec) for b in range(first, last + 1))


def _char_class(chars: str) -> str:
    return "[" + "".join(re.escape(c) for c in chars) + "]"


# A line can only hold Windows-1252 mojibake of UTF-8 if a lead byte (0xC2-0xF4, which
# Windows-1252 shows as Â..ô) is followed by a continuation byte (0x80-0xBF). Checking for that
# pair first keeps ftfy away from clean lines and makes a 1 MiB runbook cheap to scan.
_CP1252_SUSPECT = re.compile(
    _char_class(_decoded("latin-1", 0xC2, 0xF4))
    + "["
    + re.escape(_decoded("latin-1", 0x80, 0xBF))
    + "".join(
        re.escape(c)
        for c in bytes(range(0x80, 0xA0)).decode("cp1252", errors="ignore")
        if ord(c) > 0xFF
    )
    + "]"
)

# One UTF-8 encoded character as Mac Roman shows it: a lead byte followed by the right number
# of continuation bytes. Matching whole sequences (not single suspicious letters) is what keeps
# ordinary accented text safe.
_MR_CONT = _char_class(_decoded("mac_roman", 0x80, 0xBF))
_MR_UNIT = (
    f"(?:{_char_class(_decoded('mac_roman', 0xC2, 0xDF))}{_MR_CONT}"
    f"|{_char_class(_decoded('mac_roman', 0xE0, 0xEF))}{_MR_CONT}{{2}}"
    f"|{_char_class(_decoded('mac_roman', 0xF0, 0xF4))}{_MR_CONT}{{3}})"
)
_MAC_ROMAN_RUN = re.compile(f"(?:{_MR_UNIT})+")
_MAC_ROMAN_UNIT = re.compile(_MR_UNIT)

# Characters a correct decoding would not produce out of the blue: controls, surrogates,
# private use and unassigned code points.
_IMPLAUSIBLE_CATEGORIES = frozenset({"Cc", "Cs", "Co", "Cn"})
# Combining marks and joiners are fine inside an emoji sequence (🗄️ ends in U+FE0F) but a
# decoded run that starts with one is more likely an accident of ordinary text.
_DEPENDENT_CATEGORIES = frozenset({"Mn", "Me", "Cf"})


def _plausible(decoded: str) -> bool:
    if not decoded or unicodedata.category(decoded[0]) in _DEPENDENT_CATEGORIES:
        return False
    return all(unicodedata.category(c) not in _IMPLAUSIBLE_CATEGORIES for c in decoded)


def _redecode_mac_roman(run: str) -> str | None:
    try:
        decoded = run.encode("mac_roman").decode("utf-8")
    except UnicodeError:
        return None
    return decoded if _plausible(decoded) else None


def _repair_mac_roman_run(match: re.Match[str]) -> str:
    run = match.group(0)
    whole = _redecode_mac_roman(run)
    if whole is not None:
        return whole
    # One bad sequence must not block its neighbours; each unit stands on its own.
    return _MAC_ROMAN_UNIT.sub(lambda m: _redecode_mac_roman(m.group(0)) or m.group(0), run)


def _repair_cp1252_lines(text: str) -> str:
    if not _CP1252_SUSPECT.search(text):
        return text
    # ftfy works line by line anyway, so handing it only the suspect lines changes nothing
    # in the result while sparing the clean ones.
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if _CP1252_SUSPECT.search(line):
            lines[index] = ftfy.fix_text(line, _FTFY_ENCODING_ONLY)
    return "\n".join(lines)


def repair_mojibake(text: str) -> str:
    """Return ``text`` with UTF-8-read-as-cp1252/Mac-Roman sequences repaired.

    Clean text comes back unchanged (the same string).
    """
    if text.isascii():
        return text
    # Mac Roman first: its mojibake contains characters (‚ …) that the cp1252 pass would
    # otherwise consider, while cp1252 mojibake never forms a valid Mac Roman sequence.
    repaired = _MAC_ROMAN_RUN.sub(_repair_mac_roman_run, text)
    repaired = _repair_cp1252_lines(repaired)
    return text if repaired == text else repaired
