namespace Quantization.Fuzz;

/// <summary>
/// Replays files through a fuzz target without the fuzzer: what CI does with the committed corpus and crash inputs
/// (the corpus replay tests), and what <c>Quantization.Fuzz replay</c> does to triage a crash.
/// </summary>
internal static class CorpusReplay
{
    /// <summary>How long one file may take: far more than any corpus file needs, so only a hang reaches it.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>Replays every file of the given directories (missing directories hold none) through a target.</summary>
    /// <param name="target">The target.</param>
    /// <param name="directories">The directories.</param>
    /// <returns>The number of files replayed and, for each that failed, the file and what went wrong.</returns>
    public static (int Files, List<string> Failures) ReplayDirectories(FuzzTarget target, params string[] directories)
    {
        string[] files = [.. directories.Where(Directory.Exists).SelectMany(Directory.EnumerateFiles).Order(StringComparer.Ordinal)];
        List<string> failures = [];
        foreach (string file in files)
        {
            if (Replay(target, file) is { } problem)
            {
                failures.Add($"{file}: {problem}");
            }
        }

        return (files.Length, failures);
    }

    /// <summary>Replays one file through a target, on another thread so that a hang is reported instead of waited for.</summary>
    /// <param name="target">The target.</param>
    /// <param name="file">The file.</param>
    /// <returns><see langword="null"/> when the target accepted or properly refused the file, otherwise what went wrong.</returns>
    public static string? Replay(FuzzTarget target, string file)
    {
        byte[] input = File.ReadAllBytes(file);
        Task run = Task.Factory.StartNew(() => target(input), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        try
        {
            return run.Wait(Timeout) ? null : FormattableString.Invariant($"still running after {Timeout.TotalSeconds} s (a hang).");
        }
        catch (AggregateException e)
        {
            return e.InnerException?.ToString() ?? e.ToString();
        }
    }
}
