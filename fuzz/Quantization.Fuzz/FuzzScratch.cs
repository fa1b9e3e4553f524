namespace Quantization.Fuzz;

/// <summary>
/// Runs one reader on one input: a documented refusal (<see cref="InvalidDataException"/>, or another type the target
/// names) is accepted, any other exception escapes, and so does allocating far more than the input's size (a header
/// that claims huge sizes must be refused before it is trusted). Also holds the scratch directory that file-based
/// targets write their input into, deleted when the process exits.
/// </summary>
internal static class FuzzScratch
{
    /// <summary>What every target may allocate whatever the input's size (parser state, dictionaries, messages).</summary>
    private const long FixedAllowance = 4 << 20;

    private static readonly Lazy<string> ScratchDirectory = new(CreateScratchDirectory);

    private static long s_counter;

    /// <summary>Gets the process's scratch directory.</summary>
    public static string Directory => ScratchDirectory.Value;

    /// <summary>Runs <paramref name="read"/>, accepting a documented refusal and checking the bytes it allocated.</summary>
    /// <param name="target">The target's name, for messages.</param>
    /// <param name="input">The input being read.</param>
    /// <param name="bytesPerInputByte">How many bytes the reader may allocate per input byte (above a fixed allowance).</param>
    /// <param name="read">Reads the input.</param>
    /// <param name="alsoDocumented">Another exception type the reader documents for hostile input, if any.</param>
    /// <exception cref="InvalidOperationException">The reader allocated more than its budget.</exception>
    public static void Run(string target, byte[] input, long bytesPerInputByte, Action read, Type? alsoDocumented = null)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        try
        {
            read();
        }
        catch (Exception e) when (e is InvalidDataException || (alsoDocumented is not null && alsoDocumented.IsInstanceOfType(e)))
        {
            // A refusal with a documented exception is the correct answer to a malformed file.
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        long budget = FixedAllowance + (bytesPerInputByte * input.Length);
        if (allocated > budget)
        {
            throw new InvalidOperationException(FormattableString.Invariant($"{target}: reading {input.Length} bytes allocated {allocated} bytes, more than the budget of {budget}."));
        }
    }

    /// <summary>A fresh path in the scratch directory for one input (unique in the process, so that a replay that timed out cannot collide with the next).</summary>
    /// <param name="extension">The file name's extension, with its dot.</param>
    /// <returns>The path.</returns>
    public static string NewPath(string extension) =>
        Path.Combine(Directory, FormattableString.Invariant($"input-{Interlocked.Increment(ref s_counter)}{extension}"));

    private static string CreateScratchDirectory()
    {
        string directory = System.IO.Directory.CreateTempSubdirectory("quantization-fuzz-").FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                System.IO.Directory.Delete(directory, recursive: true);
            }
            catch (IOException)
            {
                // Best effort: a file still open by a timed-out replay stays in the temp directory.
            }
        };
        return directory;
    }
}
