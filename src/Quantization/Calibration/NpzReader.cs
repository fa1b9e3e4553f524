using System.IO.Compression;
using System.Text;

namespace Quantization;

/// <summary>
/// Reads NumPy <c>.npz</c> files: zip archives whose members <c>name.npy</c> are <c>.npy</c> files of the arrays
/// <c>name</c>, stored (<c>numpy.savez</c>) or DEFLATE-compressed (<c>numpy.savez_compressed</c>). Each array keeps its
/// dtype (see <see cref="NpyReader.ParseArray"/>).
/// </summary>
/// <remarks>
/// Archives are hostile input. Every member is checked before it is trusted, and a problem is an
/// <see cref="InvalidDataException"/> that names the file, the member and the problem: a member that is not a
/// <c>.npy</c> file, a name that is absolute or climbs out of the archive (<c>/x.npy</c>, <c>../x.npy</c>,
/// <c>a/../../b.npy</c>), two members of one array name, a truncated or corrupt member, an unsupported dtype, a
/// <c>.npy</c> header that disagrees with the member's size. Nothing is allocated beyond what the file can really hold:
/// a member's declared size must be at most 1032 times its compressed size (DEFLATE's largest ratio; 1 for a stored
/// member), the compressed sizes together at most the file's size (no overlapping members), and a member is read
/// to exactly its declared size, which it must hold.
/// </remarks>
public static class NpzReader
{
    /// <summary>The largest ratio of decompressed to compressed size that DEFLATE can reach (a 258-byte match in under 2 bits, plus block overhead).</summary>
    private const int MaxDeflateRatio = 1032;

    /// <summary>Reads a <c>.npz</c> file.</summary>
    /// <param name="path">The file's path.</param>
    /// <param name="cancellationToken">Stops between members.</param>
    /// <returns>The arrays by name (the member's name without <c>.npy</c>), in the archive's order.</returns>
    /// <exception cref="InvalidDataException">The file is not a well-formed <c>.npz</c> file; the message names the file and the member.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static IReadOnlyDictionary<string, NumPyArray> Read(string path, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        using FileStream stream = new(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            return Read(stream, cancellationToken);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"'{path}': {e.Message}", e);
        }
    }

    /// <summary>Reads a <c>.npz</c> archive from a stream.</summary>
    /// <param name="stream">A readable, seekable stream that holds the whole archive (its length bounds every allocation).</param>
    /// <param name="cancellationToken">Stops between members.</param>
    /// <returns>The arrays by name (the member's name without <c>.npy</c>), in the archive's order.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="stream"/> cannot be read or cannot seek.</exception>
    /// <exception cref="InvalidDataException">The archive is not a well-formed <c>.npz</c> file; the message names the member.</exception>
    public static IReadOnlyDictionary<string, NumPyArray> Read(Stream stream, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(stream);
        if (!stream.CanRead || !stream.CanSeek)
        {
            throw new ArgumentException("An .npz archive is read from a readable, seekable stream (its length bounds the allocations).", nameof(stream));
        }

        long fileLength = stream.Length;
        ZipArchive archive;
        try
        {
            archive = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"Not a zip archive (.npz): {e.Message}", e);
        }

        using (archive)
        {
            // First every member's name and sizes, so that a bad archive is refused before anything is decompressed.
            HashSet<string> names = new(StringComparer.Ordinal);
            long compressedTotal = 0;
            foreach (ZipArchiveEntry entry in archive.Entries)
            {
                string member = entry.FullName;
                string name = MemberProblem(member) is { } error ? throw Problem(member, error) : member[..^4];
                if (!names.Add(name))
                {
                    throw Problem(member, $"a second member for the array '{Printable(name)}'.");
                }

                compressedTotal += entry.CompressedLength;
                if (compressedTotal > fileLength)
                {
                    throw Problem(member, FormattableString.Invariant($"the members' compressed sizes add up to {compressedTotal} bytes, more than the file's {fileLength}: overlapping members (a zip bomb)."));
                }

                if (entry.Length > entry.CompressedLength * MaxDeflateRatio || entry.Length > Array.MaxLength)
                {
                    throw Problem(member, FormattableString.Invariant($"it declares {entry.Length} bytes from {entry.CompressedLength} compressed bytes, more than DEFLATE's ratio of {MaxDeflateRatio} (or an array) allows (a zip bomb)."));
                }
            }

            Dictionary<string, NumPyArray> arrays = new(StringComparer.Ordinal);
            foreach (ZipArchiveEntry entry in archive.Entries)
            {
                cancellationToken.ThrowIfCancellationRequested();
                try
                {
                    arrays.Add(entry.FullName[..^4], NpyReader.ParseArray(ReadMember(entry)));
                }
                catch (InvalidDataException e)
                {
                    throw Problem(entry.FullName, e.Message, e);
                }
            }

            return arrays;
        }
    }

    /// <summary>Why a member name is not that of an array (<see langword="null"/> when it is): a relative path to a <c>.npy</c> file that stays inside the archive.</summary>
    /// <param name="member">The member's name in the archive.</param>
    /// <returns>The problem, or <see langword="null"/>.</returns>
    internal static string? MemberProblem(string member)
    {
        if (!member.EndsWith(".npy", StringComparison.Ordinal) || member.Length == 4)
        {
            return "not a .npy member (an .npz archive holds only name.npy arrays).";
        }

        // A colon elsewhere is an ordinary character (TensorFlow's input names end in ":0"); "C:" starts a Windows path.
        if (member[0] is '/' || (member.Length > 1 && char.IsAsciiLetter(member[0]) && member[1] == ':') || member.Contains('\\', StringComparison.Ordinal) || member.Any(char.IsControl))
        {
            return "an absolute or non-portable path (a member is a relative path with '/' separators).";
        }

        return member.Split('/').Any(segment => segment is "" or "." or "..") ? "a path that climbs out of the archive or has empty, '.' or '..' segments." : null;
    }

    /// <summary>A name made safe for an error message: control characters escaped, long names cut.</summary>
    internal static string Printable(string name)
    {
        StringBuilder text = new();
        foreach (char c in name.Length > 200 ? name[..200] : name)
        {
            text.Append(char.IsControl(c) ? FormattableString.Invariant($"\\u{(int)c:x4}") : c.ToString());
        }

        return name.Length > 200 ? text.Append("...").ToString() : text.ToString();
    }

    /// <summary>
    /// Decompresses a member into exactly its declared size (checked against what its compressed bytes can hold).
    /// System.IO.Compression stops a member's stream at the declared size, so no more is ever decompressed.
    /// </summary>
    private static byte[] ReadMember(ZipArchiveEntry entry)
    {
        long declared = entry.Length;
        byte[] bytes = new byte[declared];
        using Stream data = entry.Open();
        int read = data.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
        if (read < bytes.Length)
        {
            throw new InvalidDataException(FormattableString.Invariant($"truncated: it holds {read} bytes but the archive declares {declared}."));
        }

        return bytes;
    }

    private static InvalidDataException Problem(string member, string problem, Exception? inner = null) =>
        new($"Member '{Printable(member)}': {problem}", inner);
}
