#!/usr/bin/env python3
"""make-vocab.py - train the SentencePiece BPE vocabulary of the default model
(docs/training.md, "The default model").

    make-vocab.py [--corpus DIR] [-o OUT_PREFIX] [--vocab-size N]

Reads the training texts DIR/train/*.txt.xz of the public-domain corpus (by default
../shared/data/corpus beside the source tree, or $MG_CORPUS_DIR), and writes
OUT_PREFIX.model (default: tokenizer.model in the current directory).

Settings like the LLaMA tokenizer's: BPE, byte fallback, digits split, no normalization
('identity'), a dummy prefix space, whitespace kept as it is; unk 0, bos 1, eos 2, no pad.
The result depends only on the corpus and these settings: every line of every training file is
used (input_sentence_size 0, so nothing is sampled; no shuffling), the random seed is fixed and
the trainer runs on one thread.

Needs the sentencepiece module (Debian: python3-sentencepiece).
"""
import argparse
import glob
import lzma
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))


def default_corpus():
    env = os.environ.get("MG_CORPUS_DIR")
    if env:
        return env
    return os.path.join(os.path.dirname(TOP), "shared", "data", "corpus")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus(),
                    help="corpus directory with train/*.txt.xz (default: ../shared/data/corpus "
                         "beside the source tree, or $MG_CORPUS_DIR)")
    ap.add_argument("-o", "--out", default="tokenizer", help="output prefix (default: tokenizer)")
    ap.add_argument("--vocab-size", type=int, default=4096, help="pieces (default 4096)")
    args = ap.parse_args()
    try:
        import sentencepiece as spm
    except ImportError:
        sys.exit("make-vocab: the sentencepiece module is needed (Debian: python3-sentencepiece)")

    files = sorted(glob.glob(os.path.join(args.corpus, "train", "*.txt.xz")))
    if not files:
        sys.exit("make-vocab: no %s/train/*.txt.xz (give the corpus with --corpus or "
                 "MG_CORPUS_DIR)" % args.corpus)

    def lines():
        for f in files:
            with lzma.open(f, "rt", encoding="utf-8", newline="\n") as src:
                for line in src:
                    yield line.rstrip("\n")

    if hasattr(spm, "set_random_generator_seed"):
        spm.set_random_generator_seed(1)
    # sentences from an iterator and the model to a writer: no file names end up in the
    # model's trainer_spec, so the file is the same wherever it is made
    with open(args.out + ".model", "wb") as model_out:
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines(),
            model_writer=model_out,
            model_type="bpe",
            vocab_size=args.vocab_size,
            # as LLaMA's tokenizer.model
            byte_fallback=True,
            split_digits=True,
            normalization_rule_name="identity",
            add_dummy_prefix=True,
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            split_by_unicode_script=True,
            split_by_whitespace=True,
            character_coverage=0.99995,
            max_sentence_length=16384,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            # deterministic: all lines, in file order, one thread
            input_sentence_size=0,
            shuffle_input_sentence=False,
            num_threads=1,
            minloglevel=2,
        )
    sp = spm.SentencePieceProcessor(model_file=args.out + ".model")
    print("make-vocab: %s.model: %d pieces from %d files" % (args.out, sp.get_piece_size(), len(files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
