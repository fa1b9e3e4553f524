using Quantization.Fuzz;

namespace Quantization.Onnx.Tests;

/// <summary>
/// Replays the committed fuzzing corpus (fuzz/corpus/onnx) and crash inputs (fuzz/crashes/onnx) through the ONNX
/// reader: every file is read, or refused with an <see cref="InvalidDataException"/>, within its allocation budget and
/// without hanging (see fuzz/README.md; the fuzzer itself is not needed).
/// </summary>
public sealed class FuzzCorpusReplayTests
{
    [Fact]
    public void CommittedCorpus_IsReadOrRefusedCleanly()
    {
        (int files, List<string> failures) = CorpusReplay.ReplayDirectories(
            OnnxReaderTarget.Load,
            Path.Combine(AppContext.BaseDirectory, "FuzzCorpus", "onnx"),
            Path.Combine(AppContext.BaseDirectory, "FuzzCrashes", "onnx"));

        Assert.True(files > 0, "No corpus files for 'onnx' next to the tests (fuzz/corpus/onnx is copied to FuzzCorpus/onnx).");
        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
    }
}
