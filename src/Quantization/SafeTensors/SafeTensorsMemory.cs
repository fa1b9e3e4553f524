using System.Buffers;

namespace Quantization;

/// <summary>
/// Bytes of a <see cref="SafeTensorsFile"/>'s mapping as <see cref="Memory{T}"/>: each span taken from it checks that
/// the file is not disposed, and a pin keeps the mapping alive (a reference on the view's handle) until it is released.
/// </summary>
internal sealed unsafe class SafeTensorsMemory : MemoryManager<byte>
{
    private readonly SafeTensorsFile _file;
    private readonly long _offset;
    private readonly int _length;

    /// <summary>Initializes a new instance of the <see cref="SafeTensorsMemory"/> class.</summary>
    /// <param name="file">The file.</param>
    /// <param name="offset">The first byte, from the start of the file's data.</param>
    /// <param name="length">The number of bytes.</param>
    public SafeTensorsMemory(SafeTensorsFile file, long offset, int length)
    {
        _file = file;
        _offset = offset;
        _length = length;
    }

    /// <inheritdoc/>
    /// <exception cref="ObjectDisposedException">The file is disposed.</exception>
    public override Span<byte> GetSpan() => _length == 0 ? [] : new Span<byte>(_file.Address(_offset), _length);

    /// <inheritdoc/>
    /// <exception cref="ObjectDisposedException">The file is disposed.</exception>
    public override MemoryHandle Pin(int elementIndex = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(elementIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(elementIndex, _length);
        byte* pointer = _file.AddMappingReference(_offset + elementIndex);
        return new MemoryHandle(pointer, default, this);
    }

    /// <inheritdoc/>
    public override void Unpin() => _file.ReleaseMappingReference();

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        // The file owns the mapping.
    }
}
