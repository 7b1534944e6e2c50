"""GNU getopt_long as the kmod front ends parse their options (glibc's rules and messages)."""

from kmodd.cli.gnuopt import Arg, GetoptLong, LongOpt, Opt, OptError

LONGS = (LongOpt("filename", Arg.NONE, "n"), LongOpt("field", Arg.REQUIRED, "F"),
         LongOpt("force", Arg.NONE, "f"), LongOpt("verbose", Arg.NONE, "v"))


def parse(*args):
    parser = GetoptLong(["prog", *args], "nF:fvw::", LONGS)
    return list(parser), parser.operands


def test_options_and_operands_are_permuted_apart():
    assert parse("a", "-f", "b", "-v") == ([Opt("f", None), Opt("v", None)], ["a", "b"])


def test_double_dash_ends_options_and_a_lone_dash_is_an_operand():
    assert parse("-", "--", "-f") == ([], ["-", "-f"])


def test_clustered_short_options_and_attached_or_separate_arguments():
    assert parse("-fvFx", "-F", "y")[0] == [Opt("f", None), Opt("v", None), Opt("F", "x"),
                                            Opt("F", "y")]


def test_optional_arguments_only_attach():
    assert parse("-w", "x", "-wy") == ([Opt("w", None), Opt("w", "y")], ["x"])


def test_long_options_take_unique_prefixes_and_either_argument_form():
    assert parse("--filen", "--field=a", "--field", "b")[0] == [
        Opt("n", None), Opt("F", "a"), Opt("F", "b")]


def test_an_option_argument_may_look_like_an_option():
    assert parse("-F", "-v")[0] == [Opt("F", "-v")]


def test_glibc_messages():
    assert parse("-x")[0] == [OptError("prog: invalid option -- 'x'\n")]
    assert parse("-F")[0] == [OptError("prog: option requires an argument -- 'F'\n")]
    assert parse("--fi")[0] == [OptError(
        "prog: option '--fi' is ambiguous; possibilities: '--filename' '--field'\n")]
    assert parse("--nope=1")[0] == [OptError("prog: unrecognized option '--nope=1'\n")]
    assert parse("--verb=1")[0] == [OptError(
        "prog: option '--verbose' doesn't allow an argument\n")]
    assert parse("--field")[0] == [OptError("prog: option '--field' requires an argument\n")]


def test_options_come_one_at_a_time_so_a_tool_can_stop_early():
    parser = GetoptLong(["prog", "-f", "-x"], "f", ())
    first = next(iter(parser))
    assert first == Opt("f", None)
