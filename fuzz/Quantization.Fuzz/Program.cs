using SharpFuzz;

namespace Quantization.Fuzz;

/// <summary>
/// The fuzzing driver. <c>Quantization.Fuzz TARGET</c> runs a target under afl-fuzz (input on standard input);
/// <c>seeds DIRECTORY</c> writes the seed corpora with the library's writers; <c>replay TARGET FILE...</c> runs files
/// through a target and prints what each did (to triage a crash without the fuzzer).
/// </summary>
internal static class Program
{
    private static readonly Dictionary<string, FuzzTarget> Targets = new(ReaderTargets.All, StringComparer.Ordinal)
    {
        ["onnx"] = OnnxReaderTarget.Load,
    };

    private static int Main(string[] args)
    {
        if (args is ["seeds", string directory])
        {
            Seeds.Write(directory);
            return 0;
        }

        if (args is ["replay", string name, .. string[] files] && Targets.TryGetValue(name, out FuzzTarget? replayed))
        {
            int failures = 0;
            foreach (string file in files)
            {
                string? problem = CorpusReplay.Replay(replayed, file);
                failures += problem is null ? 0 : 1;
                Console.WriteLine(problem is null ? $"ok: {file}" : $"FAILED: {file}: {problem}");
            }

            return failures == 0 ? 0 : 1;
        }

        if (args is [string targetName] && Targets.TryGetValue(targetName, out FuzzTarget? target))
        {
            Fuzzer.Run(stream =>
            {
                using MemoryStream input = new();
                stream.CopyTo(input);
                target(input.ToArray());
            });
            return 0;
        }

        Console.Error.WriteLine($"Usage: Quantization.Fuzz TARGET | seeds DIRECTORY | replay TARGET FILE...  (targets: {string.Join(", ", Targets.Keys)})");
        return 2;
    }
}
