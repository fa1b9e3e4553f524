using System.Buffers;
using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

using Microsoft.Win32.SafeHandles;

namespace Quantization;

/// <summary>
/// A safetensors file opened for reading: its header is parsed and checked on <see cref="Open"/>, and the file is
/// memory-mapped so that <see cref="GetBytes(string)"/> hands out each tensor's bytes without copying them.
/// </summary>
/// <remarks>
/// <para>The header is hostile input (see <see cref="Open"/>). Thread-safe for reading.</para>
/// <para>After <see cref="Dispose"/> every member that reads throws <see cref="ObjectDisposedException"/>. A span from
/// <see cref="GetBytes(string)"/> or <see cref="GetSpan{T}"/> is a bare pointer into the mapping and cannot be checked:
/// used after <see cref="Dispose"/> (or while another thread disposes the file) it reads unmapped memory, which ends the
/// process. Keep such spans within the file's lifetime, or take <see cref="GetMemory"/>, whose every span is checked and
/// whose pins keep the mapping alive.</para>
/// </remarks>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    /// <summary>The largest header accepted: 100 MB, as the reference implementation allows.</summary>
    public const long MaxHeaderSize = 100_000_000;

    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _data;
    private readonly Dictionary<string, SafeTensorInfo> _byName;
    private readonly SafeFileHandle _handle;
    private bool _disposed;

    private SafeTensorsFile(string path, SafeFileHandle handle, MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* data, List<SafeTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path;
        _handle = handle;
        _map = map;
        _view = view;
        _data = data;
        Tensors = tensors;
        Metadata = metadata;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    /// <summary>Gets the file's path.</summary>
    public string Path { get; }

    /// <summary>Gets the tensors, in the order of their data in the file.</summary>
    public IReadOnlyList<SafeTensorInfo> Tensors { get; }

    /// <summary>Gets the header's <c>__metadata__</c> strings (empty when it has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Gets a tensor's description by name.</summary>
    /// <param name="name">The tensor's name.</param>
    /// <returns>The description.</returns>
    /// <exception cref="KeyNotFoundException">The file has no tensor of that name.</exception>
    public SafeTensorInfo this[string name] =>
        _byName.TryGetValue(name, out SafeTensorInfo? info) ? info : throw new KeyNotFoundException($"'{Path}' has no tensor '{name}'.");

    /// <summary>
    /// Opens a file and checks its header: a length within the file and at most <see cref="MaxHeaderSize"/>, valid
    /// UTF-8 JSON, known dtypes, non-negative shapes whose byte count does not overflow and matches the data offsets,
    /// and tensors that tile the data section in order with no overlap and no gap.
    /// </summary>
    /// <param name="path">The file.</param>
    /// <returns>The open file; dispose it to unmap.</returns>
    /// <exception cref="InvalidDataException">The file is not a valid safetensors file; the message names the rule broken.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        using FileStream stream = new(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        long fileLength = stream.Length;
        if (fileLength < SafeTensorsHeader.PrefixSize)
        {
            throw new InvalidDataException($"'{path}': {fileLength} bytes is too short for a safetensors file (the header length alone takes 8).");
        }

        Span<byte> prefix = stackalloc byte[SafeTensorsHeader.PrefixSize];
        stream.ReadExactly(prefix);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > MaxHeaderSize || headerLength > (ulong)(fileLength - SafeTensorsHeader.PrefixSize))
        {
            throw new InvalidDataException(FormattableString.Invariant($"'{path}': the header claims {headerLength} bytes; the file has {fileLength - SafeTensorsHeader.PrefixSize} after the length and at most {MaxHeaderSize} are accepted."));
        }

        byte[] header = new byte[headerLength];
        stream.ReadExactly(header);
        long dataStart = SafeTensorsHeader.PrefixSize + (long)headerLength;
        (List<SafeTensorInfo> tensors, Dictionary<string, string> metadata) = SafeTensorsHeader.Parse(header, fileLength - dataStart, path);
        for (int i = 0; i < tensors.Count; i++)
        {
            tensors[i] = tensors[i] with { Offset = tensors[i].Offset + dataStart };
        }

        SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        if (fileLength == dataStart)
        {
            return new SafeTensorsFile(path, handle, null, null, null, tensors, metadata);
        }

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        try
        {
            map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            return new SafeTensorsFile(path, handle, map, view, pointer + view.PointerOffset, tensors, metadata);
        }
        catch
        {
            view?.Dispose();
            map?.Dispose();
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Gets a tensor's bytes, straight from the mapped file.</summary>
    /// <param name="name">The tensor's name.</param>
    /// <returns>The bytes, little-endian, row-major.</returns>
    /// <exception cref="KeyNotFoundException">The file has no tensor of that name.</exception>
    /// <exception cref="NotSupportedException">The tensor has more bytes than a span can hold (2 GB); read it with <see cref="GetBytes(SafeTensorInfo, long, int)"/> in parts.</exception>
    /// <exception cref="ObjectDisposedException">The file is disposed.</exception>
    public ReadOnlySpan<byte> GetBytes(string name)
    {
        SafeTensorInfo info = this[name];
        if (info.Length > int.MaxValue)
        {
            throw new NotSupportedException(FormattableString.Invariant($"Tensor '{name}' has {info.Length} bytes, more than a span can hold; read it in parts."));
        }

        return GetBytes(info, 0, (int)info.Length);
    }

    /// <summary>
    /// Gets a tensor's bytes as memory over the mapped file (not copied): unlike the span of <see cref="GetBytes(string)"/>,
    /// each span taken from it checks that the file is not disposed, and <see cref="ReadOnlyMemory{T}.Pin"/> keeps the
    /// mapping alive, even across <see cref="Dispose"/>, until the handle is released.
    /// </summary>
    /// <param name="name">The tensor's name.</param>
    /// <returns>The bytes, little-endian, row-major.</returns>
    /// <exception cref="KeyNotFoundException">The file has no tensor of that name.</exception>
    /// <exception cref="NotSupportedException">The tensor has more bytes than memory can hold (2 GB); read it with <see cref="GetBytes(SafeTensorInfo, long, int)"/> in parts.</exception>
    /// <exception cref="ObjectDisposedException">The file is disposed (also thrown later, by the memory's <c>Span</c> and <c>Pin</c>, once it is).</exception>
    public ReadOnlyMemory<byte> GetMemory(string name)
    {
        SafeTensorInfo info = this[name];
        if (info.Length > int.MaxValue)
        {
            throw new NotSupportedException(FormattableString.Invariant($"Tensor '{name}' has {info.Length} bytes, more than memory can hold; read it in parts."));
        }

        CheckRange(info, 0, (int)info.Length);
        return new SafeTensorsMemory(this, info.Offset, (int)info.Length).Memory;
    }

    /// <summary>Gets part of a tensor's bytes, straight from the mapped file.</summary>
    /// <param name="tensor">The tensor, one of <see cref="Tensors"/>.</param>
    /// <param name="start">The first byte, counted from the tensor's start.</param>
    /// <param name="length">The number of bytes.</param>
    /// <returns>The bytes.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The range is not within the tensor.</exception>
    /// <exception cref="ObjectDisposedException">The file is disposed.</exception>
    public ReadOnlySpan<byte> GetBytes(SafeTensorInfo tensor, long start, int length)
    {
        CheckRange(tensor, start, length);
        return length == 0 ? [] : new ReadOnlySpan<byte>(_data + tensor.Offset + start, length);
    }

    /// <summary>Copies part of a tensor's bytes by reading the file (not through the mapping).</summary>
    /// <param name="tensor">The tensor, one of <see cref="Tensors"/>.</param>
    /// <param name="start">The first byte, counted from the tensor's start.</param>
    /// <param name="destination">Receives as many bytes as it holds.</param>
    /// <exception cref="ArgumentOutOfRangeException">The range is not within the tensor.</exception>
    /// <exception cref="IOException">The file cannot be read, or has shrunk since it was opened.</exception>
    public void ReadBytes(SafeTensorInfo tensor, long start, Span<byte> destination)
    {
        CheckRange(tensor, start, destination.Length);
        long offset = tensor.Offset + start;
        while (!destination.IsEmpty)
        {
            int read = RandomAccess.Read(_handle, destination, offset);
            if (read == 0)
            {
                throw new IOException(FormattableString.Invariant($"'{Path}' ended at {offset} while reading tensor '{tensor.Name}'; it changed since it was opened."));
            }

            destination = destination[read..];
            offset += read;
        }
    }

    /// <summary>Gets a tensor's elements as a span of their .NET type, straight from the mapped file.</summary>
    /// <typeparam name="T">The element type: it must have the tensor's element size (e.g. <see cref="float"/> for F32, <see cref="Half"/> for F16, <see cref="ushort"/> for BF16, <see cref="sbyte"/> for I8).</typeparam>
    /// <param name="name">The tensor's name.</param>
    /// <returns>The elements.</returns>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> does not have the tensor's element size.</exception>
    public ReadOnlySpan<T> GetSpan<T>(string name)
        where T : unmanaged
    {
        SafeTensorInfo info = this[name];
        if (sizeof(T) != info.DataType.ElementSize())
        {
            throw new ArgumentException($"Tensor '{name}' is {info.DataType.HeaderName()} ({info.DataType.ElementSize()} bytes per element), not {typeof(T).Name} ({sizeof(T)}).", nameof(T));
        }

        return MemoryMarshal.Cast<byte, T>(GetBytes(name));
    }

    /// <summary>Reads a float tensor (F16, BF16, F32 or F64) as float32, from element <paramref name="start"/> on, into <paramref name="destination"/>.</summary>
    /// <param name="tensor">The tensor, one of <see cref="Tensors"/>.</param>
    /// <param name="start">The first element.</param>
    /// <param name="destination">Receives as many elements as it holds.</param>
    /// <exception cref="NotSupportedException">The tensor is not a float tensor.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The range is not within the tensor.</exception>
    public void ReadSingles(SafeTensorInfo tensor, long start, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        int size = tensor.DataType.ElementSize();
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(checked(destination.Length * size));
        try
        {
            Span<byte> bytes = buffer.AsSpan(0, destination.Length * size);
            ReadBytes(tensor, checked(start * size), bytes);
            Convert(tensor, bytes, destination);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static void Convert(SafeTensorInfo tensor, ReadOnlySpan<byte> bytes, Span<float> destination)
    {
        switch (tensor.DataType)
        {
            case SafeTensorDataType.Float32:
                MemoryMarshal.Cast<byte, float>(bytes).CopyTo(destination);
                break;
            case SafeTensorDataType.Float16:
                System.Numerics.Tensors.TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(bytes), destination);
                break;
            case SafeTensorDataType.BFloat16:
                ReadOnlySpan<ushort> halves = MemoryMarshal.Cast<byte, ushort>(bytes);
                Span<uint> words = MemoryMarshal.Cast<float, uint>(destination);
                for (int i = 0; i < halves.Length; i++)
                {
                    words[i] = (uint)halves[i] << 16;
                }

                break;
            case SafeTensorDataType.Float64:
                ReadOnlySpan<double> doubles = MemoryMarshal.Cast<byte, double>(bytes);
                for (int i = 0; i < doubles.Length; i++)
                {
                    destination[i] = (float)doubles[i];
                }

                break;
            default:
                throw new NotSupportedException($"Tensor '{tensor.Name}' is {tensor.DataType.HeaderName()}, not a float type (F16, BF16, F32, F64).");
        }
    }

    private void CheckRange(SafeTensorInfo tensor, long start, int length)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (!_byName.TryGetValue(tensor.Name, out SafeTensorInfo? own) || own != tensor)
        {
            throw new ArgumentException($"Tensor '{tensor.Name}' is not one of '{Path}'.", nameof(tensor));
        }

        ArgumentOutOfRangeException.ThrowIfGreaterThan(start, tensor.Length - length, nameof(start));
    }

    /// <summary>Reads a whole float tensor as float32.</summary>
    /// <param name="name">The tensor's name.</param>
    /// <returns>The values.</returns>
    /// <exception cref="NotSupportedException">The tensor is not a float tensor, or has more elements than an array can hold.</exception>
    public float[] ReadSingles(string name)
    {
        SafeTensorInfo info = this[name];
        if (info.ElementCount > Array.MaxLength)
        {
            throw new NotSupportedException(FormattableString.Invariant($"Tensor '{name}' has {info.ElementCount} elements, more than an array can hold."));
        }

        float[] values = new float[info.ElementCount];
        ReadSingles(info, 0, values);
        return values;
    }

    /// <summary>The address of a byte of the mapped data, for <see cref="SafeTensorsMemory"/>.</summary>
    /// <exception cref="ObjectDisposedException">The file is disposed.</exception>
    internal byte* Address(long offset)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _data + offset;
    }

    /// <summary>Keeps the mapping alive until <see cref="ReleaseMappingReference"/>, even if the file is disposed meanwhile, and returns a byte's address.</summary>
    /// <exception cref="ObjectDisposedException">The file is disposed.</exception>
    internal byte* AddMappingReference(long offset)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_view is not null)
        {
            bool added = false;
            _view.SafeMemoryMappedViewHandle.DangerousAddRef(ref added); // throws ObjectDisposedException once the view is closed
        }

        return _data + offset;
    }

    /// <summary>Releases a reference of <see cref="AddMappingReference"/>; the last one after <see cref="Dispose"/> unmaps the file.</summary>
    internal void ReleaseMappingReference() => _view?.SafeMemoryMappedViewHandle.DangerousRelease();

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _handle.Dispose();
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
        }

        _map?.Dispose();
    }
}
