using System.IO.Compression;

namespace Quantization;

/// <summary>
/// Writes NumPy <c>.npz</c> files that <c>numpy.load</c> reads: a zip archive with one member <c>name.npy</c> per array
/// (written by <see cref="NpyWriter"/>), stored as <c>numpy.savez</c> does or DEFLATE-compressed as
/// <c>numpy.savez_compressed</c> does, every member dated 1980-01-01 00:00 as numpy dates them, so that equal arrays give
/// equal files.
/// </summary>
public static class NpzWriter
{
    private static readonly DateTimeOffset ZipEpoch = new(1980, 1, 1, 0, 0, 0, TimeSpan.Zero);

    /// <summary>Writes a <c>.npz</c> file atomically: through a temporary file renamed over <paramref name="path"/> when complete.</summary>
    /// <param name="path">The file to write.</param>
    /// <param name="arrays">The arrays by name; a name is a relative path with '/' separators, without '.', '..' or empty segments, a drive letter, backslashes or control characters.</param>
    /// <param name="compress">DEFLATE-compress the members (<c>savez_compressed</c>); stored otherwise (<c>savez</c>).</param>
    /// <param name="cancellationToken">Stops between members; the target is then left as it was.</param>
    /// <exception cref="ArgumentNullException"><paramref name="arrays"/> or one of its arrays is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="path"/> is empty, or a name is invalid or repeated.</exception>
    /// <exception cref="IOException">The file cannot be written.</exception>
    public static void Write(string path, IEnumerable<KeyValuePair<string, NumPyArray>> arrays, bool compress = false, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(arrays);
        AtomicFile.Write(path, stream => Write(stream, arrays, compress, cancellationToken));
    }

    /// <summary>Writes a <c>.npz</c> archive to a stream.</summary>
    /// <param name="stream">A writable stream; a seekable one gets members without data descriptors, as numpy writes them.</param>
    /// <param name="arrays">The arrays by name; a name is a relative path with '/' separators, without '.', '..' or empty segments, a drive letter, backslashes or control characters.</param>
    /// <param name="compress">DEFLATE-compress the members (<c>savez_compressed</c>); stored otherwise (<c>savez</c>).</param>
    /// <param name="cancellationToken">Stops between members.</param>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/>, <paramref name="arrays"/> or one of its arrays is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">A name is invalid or repeated.</exception>
    public static void Write(Stream stream, IEnumerable<KeyValuePair<string, NumPyArray>> arrays, bool compress = false, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(arrays);
        KeyValuePair<string, NumPyArray>[] all = [.. arrays];
        HashSet<string> names = new(StringComparer.Ordinal);
        foreach ((string name, NumPyArray array) in all)
        {
            ArgumentNullException.ThrowIfNull(name, nameof(arrays));
            if (NpzReader.MemberProblem(name + ".npy") is { } problem)
            {
                throw new ArgumentException($"The array name '{NpzReader.Printable(name)}' makes the member '{NpzReader.Printable(name)}.npy': {problem}", nameof(arrays));
            }

            if (!names.Add(name))
            {
                throw new ArgumentException($"The array name '{NpzReader.Printable(name)}' appears twice.", nameof(arrays));
            }

            ArgumentNullException.ThrowIfNull(array, $"{nameof(arrays)}['{name}']");
        }

        using ZipArchive archive = new(stream, ZipArchiveMode.Create, leaveOpen: true);
        foreach ((string name, NumPyArray array) in all)
        {
            cancellationToken.ThrowIfCancellationRequested();
            ZipArchiveEntry entry = archive.CreateEntry(name + ".npy", compress ? CompressionLevel.Optimal : CompressionLevel.NoCompression);
            entry.LastWriteTime = ZipEpoch;
            using Stream member = entry.Open();
            NpyWriter.Write(member, array);
        }
    }
}
