using System.Runtime.InteropServices;

namespace Quantization;

/// <summary>
/// Writes a safetensors file as a stream: the header is written first from the tensors' descriptions, then their bytes
/// in the same order, in as many <see cref="Write(ReadOnlySpan{byte})"/> calls as suits the caller, so that no tensor
/// has to be held whole. The file goes to a temporary name beside the target and is renamed into place by
/// <see cref="Commit"/> only when every byte has been written; disposing without committing deletes it.
/// </summary>
public sealed class SafeTensorsWriter : IDisposable
{
    private readonly FileStream _stream;
    private readonly string _temporary;
    private readonly SafeTensorDescriptor[] _tensors;
    private readonly long[] _ends;
    private long _written;
    private bool _committed;
    private bool _disposed;

    private SafeTensorsWriter(string path, string temporary, FileStream stream, SafeTensorDescriptor[] tensors, long[] ends)
    {
        Path = path;
        _temporary = temporary;
        _stream = stream;
        _tensors = tensors;
        _ends = ends;
    }

    /// <summary>Gets the target path.</summary>
    public string Path { get; }

    /// <summary>Gets the total number of data bytes the tensors take.</summary>
    public long DataLength => _ends.Length == 0 ? 0 : _ends[^1];

    /// <summary>Gets the name of the tensor the next byte written belongs to, or <see langword="null"/> when all are written.</summary>
    public string? CurrentTensor
    {
        get
        {
            int index = Array.FindIndex(_ends, end => end > _written);
            return index < 0 ? null : _tensors[index].Name;
        }
    }

    /// <summary>Creates the file (under a temporary name) and writes its header.</summary>
    /// <param name="path">The target file.</param>
    /// <param name="tensors">The tensors, in the order their bytes will be written.</param>
    /// <param name="metadata">The header's <c>__metadata__</c> strings, if any.</param>
    /// <returns>The writer.</returns>
    /// <exception cref="ArgumentException">A name is empty, repeated or <c>__metadata__</c>, or a shape is negative or too large.</exception>
    /// <exception cref="IOException">The file cannot be created.</exception>
    public static SafeTensorsWriter Create(string path, IEnumerable<SafeTensorDescriptor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(tensors);
        SafeTensorDescriptor[] list = [.. tensors];
        HashSet<string> names = new(StringComparer.Ordinal);
        long[] ends = new long[list.Length];
        long end = 0;
        for (int i = 0; i < list.Length; i++)
        {
            SafeTensorDescriptor tensor = list[i] ?? throw new ArgumentException("A tensor description is null.", nameof(tensors));
            if (string.IsNullOrEmpty(tensor.Name) || tensor.Name == SafeTensorsHeader.MetadataKey || !names.Add(tensor.Name))
            {
                throw new ArgumentException($"Tensor name '{tensor.Name}' is empty, reserved or repeated.", nameof(tensors));
            }

            end = checked(end + SafeTensorsHeader.ByteCount(tensor.DataType, tensor.Shape, tensor.Name));
            ends[i] = end;
        }

        byte[] header = SafeTensorsHeader.Write(list.Select((t, i) => (t.Name, t.DataType, t.Shape, ends[i] - (i == 0 ? 0 : ends[i - 1]))), metadata);
        string full = System.IO.Path.GetFullPath(path);
        string temporary = AtomicFile.TemporaryPath(full);
        FileStream stream = new(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1 << 20);
        try
        {
            stream.Write(header);
            return new SafeTensorsWriter(full, temporary, stream, list, ends);
        }
        catch
        {
            stream.Dispose();
            File.Delete(temporary);
            throw;
        }
    }

    /// <summary>Appends data bytes: the rest of the current tensor, then the next ones.</summary>
    /// <param name="bytes">The bytes, little-endian.</param>
    /// <exception cref="InvalidOperationException">More bytes than the tensors take, or the writer is committed.</exception>
    public void Write(ReadOnlySpan<byte> bytes)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_committed || bytes.Length > DataLength - _written)
        {
            throw new InvalidOperationException(FormattableString.Invariant($"'{Path}': {bytes.Length} more bytes would pass the {DataLength} the tensors take ({_written} written)."));
        }

        _stream.Write(bytes);
        _written += bytes.Length;
    }

    /// <summary>Appends data elements (their little-endian bytes).</summary>
    /// <typeparam name="T">The element type.</typeparam>
    /// <param name="values">The values.</param>
    /// <exception cref="InvalidOperationException">More bytes than the tensors take, or the writer is committed.</exception>
    public void Write<T>(ReadOnlySpan<T> values)
        where T : unmanaged => Write(MemoryMarshal.AsBytes(values));

    /// <summary>Flushes the file to disk and renames it into place.</summary>
    /// <exception cref="InvalidOperationException">Not every tensor's bytes have been written.</exception>
    /// <exception cref="IOException">The file cannot be written or renamed; the target is then left as it was.</exception>
    public void Commit()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_written != DataLength)
        {
            throw new InvalidOperationException(FormattableString.Invariant($"'{Path}': {_written} of {DataLength} data bytes written; tensor '{CurrentTensor}' is incomplete."));
        }

        _stream.Flush(flushToDisk: true);
        _stream.Dispose();
        File.Move(_temporary, Path, overwrite: true);
        _committed = true;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _stream.Dispose();
        if (!_committed)
        {
            File.Delete(_temporary);
        }
    }
}
