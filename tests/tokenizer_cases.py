#!/usr/bin/python3
"""tokenizer_cases.py OUTDIR - SentencePiece's own tokenizations, for tests/test-tokenizer.c.

Run by the C test as `/usr/bin/python3 $MG_TOP_SRCDIR/tests/tokenizer_cases.py OUTDIR`
(Debian's python3-sentencepiece belongs to /usr/bin/python3). It writes, for each vocabulary,

  OUTDIR/NAME.vocab   the vocabulary, as the C test turns it into tokenizer.ggml.* keys:
                        model llama
                        add_space_prefix 0|1
                        bos ID / eos ID / unk ID / pad ID      (-1: none)
                        n N
                        N lines "TYPE SCORE HEX" (token_type 1..6, float score, piece in hex)
  OUTDIR/NAME.cases   records, one per test string:
                        "case NAME NBYTES NIDS\\n" NBYTES raw bytes "\\n"
                        NIDS ids separated by spaces "\\n"
                        "dec NBYTES\\n" NBYTES raw bytes "\\n"   (SentencePiece's decode of the
                        ids; NBYTES = -1 and nothing follows when not compared)
  OUTDIR/index        the vocabulary names, one a line
  OUTDIR/skip         present when part of the test could not be made (the reason inside)

Vocabularies: spm_bpe (BPE trained here on ~200 KB of the training corpus, byte fallback),
spm_edit (spm_bpe with some pieces turned unused or user-defined, and added user-defined
and control pieces, edited in the model protobuf), spm_user (the same without unused
pieces that merges can form, but with "<unused_N>" placeholders), spm_unk (BPE without
byte fallback: rare characters become <unk>) and llama2
(tests/data/llama2-tokenizer/tokenizer.model, encoding the held-out books whole).

Invalid UTF-8 cannot be passed to SentencePiece's Python API (it takes str). SentencePiece
turns each invalid byte into U+FFFD and we keep the byte, so for those cases the expected
ids are SentencePiece's ids for the text with one U+FFFD per invalid byte, in which the
tokens spelling each U+FFFD (its <0xEF><0xBF><0xBD> byte tokens, or pieces made only of
U+FFFD) are replaced by the invalid bytes' byte tokens. This is exact as long as no piece
mixes U+FFFD with other characters (checked; otherwise those cases are left out).

The corpus is $MG_SHARED_DIR/data/corpus, else $MG_TOP_SRCDIR/../shared/data/corpus. Without
it only the llama2 vocabulary with the hand-written strings is written, and OUTDIR/skip says
why. Exit status 77 (nothing written) when sentencepiece cannot be imported.
"""
import glob
import io
import lzma
import os
import random
import struct
import sys

try:
    import sentencepiece as spm
except ImportError as e:  # pragma: no cover
    print("SKIP: python3-sentencepiece is not installed (%s)" % e)
    sys.exit(77)

TOP = os.environ.get("MG_TOP_SRCDIR") or "."
SHARED = os.environ.get("MG_SHARED_DIR") or os.path.join(TOP, "..", "shared")
CORPUS = os.path.join(SHARED, "data", "corpus")
LLAMA = os.path.join(TOP, "tests", "data", "llama2-tokenizer", "tokenizer.model")

# ------------------------------------------------------------------ protobuf wire format
# (python3-protobuf is not needed: ModelProto is read and edited field by field)


def rd_varint(b, i):
    x = s = 0
    while True:
        c = b[i]
        i += 1
        x |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return x, i


def pb_fields(b):
    i = 0
    while i < len(b):
        key, i = rd_varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = rd_varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = rd_varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        yield f, wt, v


def wr_varint(x):
    out = bytearray()
    while True:
        c = x & 0x7F
        x >>= 7
        if x:
            out.append(c | 0x80)
        else:
            out.append(c)
            return bytes(out)


def wr_field(f, wt, v):
    key = wr_varint(f << 3 | wt)
    if wt == 0:
        return key + wr_varint(v)
    if wt == 2:
        return key + wr_varint(len(v)) + v
    return key + v  # fixed 32/64: v is the raw bytes


def parse_model(blob):
    """-> (pieces [(piece str, score, type)], normalizer spec dict, other top-level fields)"""
    pieces, other, norm = [], [], {}
    for f, wt, v in pb_fields(blob):
        if f == 1:
            p, score, typ = "", 0.0, 1
            for g, _, w in pb_fields(v):
                if g == 1:
                    p = w.decode("utf-8")
                elif g == 2:
                    score = struct.unpack("<f", w)[0]
                elif g == 3:
                    typ = w
            pieces.append([p, score, typ])
        else:
            if f == 3:
                for g, _, w in pb_fields(v):
                    norm[g] = w
            other.append((f, wt, v))
    return pieces, norm, other


def build_model(pieces, other):
    out = bytearray()
    for p, score, typ in pieces:
        m = wr_field(1, 2, p.encode("utf-8")) + wr_field(2, 5, struct.pack("<f", score)) + \
            wr_field(3, 0, typ)
        out += wr_field(1, 2, m)
    for f, wt, v in other:
        if f != 4:  # self_test_data would no longer hold
            out += wr_field(f, wt, v)
    return bytes(out)


# ------------------------------------------------------------------ SentencePiece's UTF-8 rules


def utf8_len(b, i):
    """Length of the valid character at b[i:], 0 if invalid (SentencePiece's DecodeUTF8)."""
    n = len(b) - i
    c = b[i]
    if c < 0x80:
        return 1
    trail = lambda k: (b[i + k] & 0xC0) == 0x80
    if c & 0xE0 == 0xC0:
        if n >= 2 and trail(1) and ((c & 0x1F) << 6 | (b[i + 1] & 0x3F)) >= 0x80:
            return 2
    elif c & 0xF0 == 0xE0:
        if n >= 3 and trail(1) and trail(2):
            cp = (c & 0x0F) << 12 | (b[i + 1] & 0x3F) << 6 | (b[i + 2] & 0x3F)
            if cp >= 0x800 and not 0xD800 <= cp <= 0xDFFF:
                return 3
    elif c & 0xF8 == 0xF0:
        if n >= 4 and trail(1) and trail(2) and trail(3):
            cp = (c & 0x07) << 18 | (b[i + 1] & 0x3F) << 12 | (b[i + 2] & 0x3F) << 6 | \
                (b[i + 3] & 0x3F)
            if 0x10000 <= cp <= 0x10FFFF:
                return 4
    return 0


def split_invalid(b):
    """-> (str with one U+FFFD per invalid byte, list of the invalid bytes)"""
    out, bad, i = [], [], 0
    while i < len(b):
        k = utf8_len(b, i)
        if k:
            out.append(b[i:i + k].decode("utf-8"))
            i += k
        else:
            out.append("\ufffd")
            bad.append(b[i])
            i += 1
    return "".join(out), bad


# ------------------------------------------------------------------ test strings


def synthetic_cases(rng):
    s = [
        ("hello", "Hello world!"),
        ("empty", ""),
        ("space1", " "),
        ("space2", "  "),
        ("space10", " " * 10),
        ("space200", " " * 200),
        ("leading", "   leading spaces"),
        ("trailing", "trailing spaces   "),
        ("inner", " a  b   c    d     e "),
        ("nl", "\n"),
        ("nl2", "\n\n"),
        ("lines", "line one\nline two\n\nline four\n"),
        ("crlf", "windows\r\nline\r\n"),
        ("tabs", "\ttab\tseparated\t\tvalues\t"),
        ("ws-mix", " \t \n  \u3000 \u00a0x"),
        ("accents", "café naïve résumé Zürich façade jalapeño Ångström"),
        ("cjk-ja", "日本語のテキストです。東京"),
        ("cjk-zh", "中文字符测试，简体与繁體。"),
        ("korean", "한국어 텍스트"),
        ("emoji", "emoji 😀🎉👍🏽 family 👨‍👩‍👧 flag 🇫🇷"),
        ("combining", "combining e\u0301 a\u0308 n\u0303 o\u0302\u0323 Z\u0351\u0360"),
        ("scripts", "Ελληνικά Русский текст עברית العربية हिन्दी ไทย"),
        ("lower-block", "\u2581 literal lower block \u2581\u2581x\u2581"),
        ("replacement", "a \ufffd replacement"),
        ("zero-width", "zero\u200bwidth\u200djoin\ufeffbom"),
        ("math", "∑∫√∞ ≠ ≤ ≥ ± × ÷ → ⇒ ∀x∃y"),
        ("nul", "\x00"),
        ("nul-mid", "a\x00b\x00\x00c"),
        ("controls", "\x01\x02\x1b[0m\x7f\x08bell\x07"),
        ("c1", "\u0080\u009f\u00ad"),
        ("digits", "1234567890"),
        ("numbers", "3.14159 2024-01-01 1,000,000 0x1F 1e-9 v0.1.97"),
        ("punct", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
        ("long-word", "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis"),
        ("repeat", "a" * 50 + " " + "ab" * 30 + " " + "the " * 20),
        ("reserved", "<s> </s> <unk> <0x41> <pad> <sep> <ctl> <mask>"),
        ("user-like", "x<sep>y <sep><sep> ▁▁▁▁ <ctl>z"),
        ("astral", "\U0001F600\U00010348\U0010FFFD\U0001D11E"),
        ("quotes", "\u201cHe said,\u201d \u2018she\u2019 \u2014 \u2013 \u2026 «guillemets»"),
        ("one-char", "x"),
        ("one-space-char", " x"),
        ("only-newlines", "\n\n\n\n\n"),
    ]
    alphabets = [
        "abcdefghijklmnopqrstuvwxyz     ",
        "ETAOINSHRDLU etaoinshrdlu .,;:!?'\"-\n\t",
        "0123456789 +-*/=",
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿ ",
        "αβγδεζηθικλμνξοπρστυφχψω АБВГДЕЖЗИЙ ",
        "日本語中文字符测试東京の一二三 ",
        "😀🎉👍🏽👨‍👩‍👧🇫🇷\u200d\ufe0f ",
        "\x00\x01\x1f\x7f\u0080\u00a0\u2581\u3000\ufffd",
    ]
    for k in range(300):
        n = rng.randrange(1, 60)
        pool = "".join(rng.sample(alphabets, rng.randrange(1, 4)))
        s.append(("random-%d" % k, "".join(rng.choice(pool) for _ in range(n))))
    for k in range(40):  # any code point but surrogates
        cps = []
        for _ in range(rng.randrange(1, 20)):
            r = rng.random()
            cp = rng.randrange(0x20, 0x80) if r < 0.5 else rng.randrange(0x80, 0x110000)
            if 0xD800 <= cp <= 0xDFFF:
                cp = 0x20
            cps.append(chr(cp))
        s.append(("codepoints-%d" % k, "".join(cps)))
    return [(name, t.encode("utf-8")) for name, t in s]


def invalid_cases(rng):
    c = [
        ("inv-ff", b"\xff"),
        ("inv-mid", b"abc\xffdef"),
        ("inv-trunc3", b"\xe2\x96"),
        ("inv-trunc3-space", b"\xe2\x96 x"),
        ("inv-lead", b"\xc3"),
        ("inv-lead-ascii", b"\xc3("),
        ("inv-surrogate", b"\xed\xa0\x80"),
        ("inv-too-big", b"\xf4\x90\x80\x80"),
        ("inv-overlong", b"\xc0\xaf \xe0\x80\xaf"),
        ("inv-cont", b"\x80\x80 \xbf"),
        ("inv-word-end", b"caf\xc3"),
        ("inv-between-spaces", b" \xfe \xfe\xfe "),
        ("inv-after-space", b"hello \xf0\x9f\x98 world"),
    ]
    for k in range(60):
        n = rng.randrange(1, 40)
        c.append(("inv-random-%d" % k, bytes(
            rng.choice([rng.randrange(0x20, 0x7F), 0x20, rng.randrange(0x80, 0x100)])
            for _ in range(n))))
    return [x for x in c if split_invalid(x[1])[1]]


# ------------------------------------------------------------------ writing


def piece_type(sp, i, proto_type):
    t = proto_type
    checks = [(2, sp.is_unknown(i)), (3, sp.is_control(i)), (5, sp.is_unused(i)),
              (6, sp.is_byte(i))]
    for code, flag in checks:
        assert flag == (t == code), "piece %d: proto type %d disagrees with is_*()" % (i, t)
    return t


def write_vocab(path, sp, pieces, norm):
    name = norm.get(1, b"").decode()
    assert name == "identity", "normalizer %r: the GGUF keys can only express identity" % name
    assert not norm.get(4, 0), "remove_extra_whitespaces is not supported"
    assert norm.get(5, 1), "escape_whitespaces false is not supported"
    with open(path, "w", encoding="ascii") as f:
        f.write("model llama\n")
        f.write("add_space_prefix %d\n" % (1 if norm.get(3, 1) else 0))
        f.write("bos %d\neos %d\nunk %d\npad %d\n" % (sp.bos_id(), sp.eos_id(), sp.unk_id(),
                                                     sp.pad_id()))
        f.write("n %d\n" % sp.get_piece_size())
        assert sp.get_piece_size() == len(pieces)
        for i, (p, score, typ) in enumerate(pieces):
            assert sp.id_to_piece(i) == p
            assert sp.get_score(i) == score
            f.write("%d %r %s\n" % (piece_type(sp, i, typ), score, p.encode("utf-8").hex()))


def ffff_map(sp, pieces):
    """ids of pieces made only of U+FFFD -> their length in characters; None if some piece
    mixes U+FFFD with other characters (the invalid-UTF-8 cases then cannot be derived)."""
    m = {}
    for i, (p, _, typ) in enumerate(pieces):
        if "\ufffd" in p:
            if p.strip("\ufffd"):
                return None
            m[i] = len(p)
    return m


def expected_invalid(sp, pieces, raw):
    text, bad = split_invalid(raw)
    ids = sp.encode(text)
    fmap = ffff_map(sp, pieces)
    byte_id = {}
    for i, (p, _, typ) in enumerate(pieces):
        if typ == 6:
            byte_id[int(p[3:5], 16)] = i
    if not byte_id:  # the same ids (one unk per run), unless U+FFFD is a piece
        return None if fmap else ids
    out, k, i = [], 0, 0
    triple = [byte_id[0xEF], byte_id[0xBF], byte_id[0xBD]]
    while i < len(ids):
        if ids[i:i + 3] == triple:
            out.append(byte_id[bad[k]])
            k += 1
            i += 3
        elif ids[i] in fmap:
            for _ in range(fmap[ids[i]]):
                out.append(byte_id[bad[k]])
                k += 1
            i += 1
        else:
            out.append(ids[i])
            i += 1
    assert k == len(bad), "could not place every invalid byte"
    return out


def write_cases(path, sp, pieces, cases, invalid, decode=True):
    n_ids = 0
    fmap = ffff_map(sp, pieces)
    with open(path, "wb") as f:
        def rec(name, raw, ids, dec):
            f.write(b"case %s %d %d\n" % (name.encode(), len(raw), len(ids)))
            f.write(raw + b"\n")
            f.write(" ".join(map(str, ids)).encode() + b"\n")
            if dec is None:
                f.write(b"dec -1\n")
            else:
                f.write(b"dec %d\n" % len(dec) + dec + b"\n")
        for name, raw in cases:
            ids = sp.encode(raw.decode("utf-8"))
            rec(name, raw, ids, sp.decode(ids).encode("utf-8") if decode else None)
            n_ids += len(ids)
        if fmap is not None:
            for name, raw in invalid:
                ids = expected_invalid(sp, pieces, raw)
                if ids is None:
                    continue
                rec(name, raw, ids, None)
                n_ids += len(ids)
    return n_ids


def read_xz(path, limit=None):
    with lzma.open(path, "rb") as f:
        data = f.read(limit) if limit else f.read()
    return data.decode("utf-8", errors="ignore" if limit else "strict")  # a cut character


def train(sentences, **kw):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, model_type="bpe",
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        split_digits=True, allow_whitespace_only_pieces=True, num_threads=2,
        minloglevel=2, **kw)
    return model.getvalue()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: tokenizer_cases.py OUTDIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(20240611)
    synth = synthetic_cases(rng)
    invalid = invalid_cases(rng)
    names = []
    skip = None

    train_files = sorted(glob.glob(os.path.join(CORPUS, "train", "*.txt.xz")))
    eval_files = sorted(glob.glob(os.path.join(CORPUS, "eval", "*.txt.xz")))
    if not train_files or not eval_files:
        skip = "the corpus is missing (looked in %s; set MG_SHARED_DIR)" % CORPUS

    eval_lines, books = [], []
    if not skip:
        # ~200 KB of training text: 25 KB from each of 8 books, past their openings
        sentences = []
        for path in train_files[::2]:
            text = read_xz(path, 60000)
            sentences += [l for l in text[30000:55000].split("\n") if l.strip()]
        # a few non-ASCII words so that some multi-byte characters become pieces
        extra = ["café naïve résumé façade Zürich jalapeño", "日本語のテキスト 東京 日本",
                 "Ελληνικά αβγ Русский текст"]
        sentences += extra * 40
        for path in eval_files:
            text = read_xz(path)
            books.append((os.path.basename(path).split(".")[0], text.encode("utf-8")))
            lines = text.split("\n")
            mid = len(lines) // 3
            eval_lines += lines[mid:mid + 500]
        line_cases = [("eval-line-%d" % i, l.encode("utf-8")) for i, l in enumerate(eval_lines)]

        variants = []
        m_bpe = train(sentences, vocab_size=800, byte_fallback=True, character_coverage=0.9995)
        variants.append(("spm_bpe", m_bpe))

        def edit(n_unused, placeholders):
            pieces, norm, other = parse_model(m_bpe)
            prng = random.Random(7)
            normal = [i for i, p in enumerate(pieces) if p[2] == 1 and len(p[0]) >= 2]
            for i in prng.sample(normal, n_unused):
                pieces[i][2] = 5  # unused: merged through, then split back
            for i in prng.sample([i for i in normal if pieces[i][2] == 1], 4):
                pieces[i][2] = 4  # user-defined: matched whole, never merged
            singles = [i for i, p in enumerate(pieces) if p[2] == 1 and len(p[0]) == 1 and
                       p[0] not in "\u2581 "]
            pieces[prng.choice(singles)][2] = 5
            where = {p[0]: i for i, p in enumerate(pieces)}
            extra = [("<sep>", 4), ("\u2581\u2581\u2581\u2581", 4), ("<ctl>", 3), ("ab", 4)]
            extra += [("<unused_%d>" % k, 5) for k in range(placeholders)]
            for p, typ in extra:
                if p in where:
                    pieces[where[p]][2] = typ
                else:
                    pieces.append([p, 0.0, typ])
            return build_model(pieces, other)

        variants.append(("spm_edit", edit(40, 0)))
        # no unused piece that merges can form: the fast path (cut text) with user pieces
        variants.append(("spm_user", edit(0, 8)))

        variants.append(("spm_unk", train(sentences, vocab_size=600, byte_fallback=False,
                                          character_coverage=0.999)))

        for name, blob in variants:
            sp = spm.SentencePieceProcessor(model_proto=blob)
            pieces, norm, _ = parse_model(blob)
            write_vocab(os.path.join(out, name + ".vocab"), sp, pieces, norm)
            cases = synth + line_cases + [("book-" + b, t) for b, t in books[:1]]
            n = write_cases(os.path.join(out, name + ".cases"), sp, pieces, cases, invalid)
            print("%s: %d pieces, %d cases, %d ids" % (name, len(pieces), len(cases), n))
            names.append(name)

    if os.path.exists(LLAMA):
        blob = open(LLAMA, "rb").read()
        sp = spm.SentencePieceProcessor(model_proto=blob)
        pieces, norm, _ = parse_model(blob)
        write_vocab(os.path.join(out, "llama2.vocab"), sp, pieces, norm)
        cases = synth + [("book-" + b, t) for b, t in books]
        if eval_lines:
            cases += [("eval-line-%d" % i, l.encode("utf-8")) for i, l in enumerate(eval_lines)]
        n = write_cases(os.path.join(out, "llama2.cases"), sp, pieces, cases, invalid)
        print("llama2: %d pieces, %d cases, %d ids" % (len(pieces), len(cases), n))
        names.append("llama2")
    else:
        skip = (skip + "; " if skip else "") + "%s is missing" % LLAMA

    with open(os.path.join(out, "index"), "w") as f:
        f.write("".join(n + "\n" for n in names))
    if skip:
        with open(os.path.join(out, "skip"), "w") as f:
            f.write(skip + "\n")
        print("SKIP (partly): " + skip)


if __name__ == "__main__":
    main()
