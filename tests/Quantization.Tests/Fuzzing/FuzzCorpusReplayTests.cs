using Quantization.Fuzz;

namespace Quantization.Tests.Fuzzing;

/// <summary>
/// Replays the committed fuzzing corpus (fuzz/corpus) and crash inputs (fuzz/crashes) through the core readers: every
/// file is read, or refused with the reader's documented exception, within its allocation budget and without hanging
/// (see fuzz/README.md; the fuzzer itself is not needed).
/// </summary>
public sealed class FuzzCorpusReplayTests
{
    [Theory]
    [InlineData("npy")]
    [InlineData("npz")]
    [InlineData("safetensors")]
    [InlineData("index")]
    public void CommittedCorpus_IsReadOrRefusedCleanly(string target)
    {
        (int files, List<string> failures) = CorpusReplay.ReplayDirectories(
            ReaderTargets.All[target],
            Path.Combine(AppContext.BaseDirectory, "FuzzCorpus", target),
            Path.Combine(AppContext.BaseDirectory, "FuzzCrashes", target));

        Assert.True(files > 0, $"No corpus files for '{target}' next to the tests (fuzz/corpus/{target} is copied to FuzzCorpus/{target}).");
        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
    }
}
