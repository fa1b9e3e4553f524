namespace Quantization;

/// <summary>Writes a file through a temporary name beside it, renamed over the target only when complete.</summary>
internal static class AtomicFile
{
    /// <summary>A fresh, hidden temporary name in the target's directory (so that the final rename stays on one file system).</summary>
    /// <param name="fullPath">The target's full path.</param>
    /// <returns>The temporary path.</returns>
    public static string TemporaryPath(string fullPath) =>
        Path.Combine(Path.GetDirectoryName(fullPath) ?? ".", $".{Path.GetFileName(fullPath)}.{Guid.NewGuid():N}.tmp");

    /// <summary>Writes the file; on any failure the target is left as it was and no temporary file remains.</summary>
    /// <param name="path">The target.</param>
    /// <param name="write">Writes the content.</param>
    public static void Write(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string temporary = TemporaryPath(full);
        try
        {
            using (FileStream stream = new(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temporary, full, overwrite: true);
        }
        finally
        {
            File.Delete(temporary);
        }
    }
}
