namespace Quantization.Fuzz;

/// <summary>
/// Reads one fuzz input with a reader. Returns normally when the reader accepts the input or refuses it with one of
/// its documented exceptions; anything else escapes: a crash to the fuzzer, a failure to the corpus replay tests.
/// </summary>
/// <param name="input">The bytes of one file.</param>
internal delegate void FuzzTarget(byte[] input);
