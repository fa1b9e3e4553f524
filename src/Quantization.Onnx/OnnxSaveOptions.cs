namespace Quantization.Onnx;

/// <summary>
/// How <see cref="OnnxModel.Save"/> writes a model: inline in one protobuf file, or with the data of large tensors in
/// one data file beside it (the ONNX external-data format: <c>data_location</c> EXTERNAL, with <c>location</c>,
/// <c>offset</c> and <c>length</c> entries relative to the model's directory).
/// </summary>
/// <remarks>
/// In the data file, a tensor of at least <see cref="PageAlignment"/> bytes starts at a multiple of
/// <see cref="PageAlignment"/> (a page, so that readers such as ONNX Runtime can memory-map it); a smaller one starts at a
/// multiple of <see cref="SmallTensorAlignment"/>, which wastes less space and still suits vector loads. Gaps are zeros.
/// </remarks>
public sealed class OnnxSaveOptions
{
    /// <summary>The largest serialized model protobuf can read or write: 2 GiB minus one byte.</summary>
    public const long ProtobufSizeLimit = int.MaxValue;

    /// <summary>
    /// The inline size above which <see cref="ExternalDataPolicy.Auto"/> goes external: <see cref="ProtobufSizeLimit"/>
    /// less a 64 MiB margin for the estimate (message headers and varint lengths are approximated).
    /// </summary>
    public const long AutoExternalDataLimit = ProtobufSizeLimit - (64L << 20);

    /// <summary>The alignment, in bytes, of tensors of at least this many bytes in the data file: one page.</summary>
    public const int PageAlignment = 4096;

    /// <summary>The alignment, in bytes, of tensors smaller than <see cref="PageAlignment"/> in the data file.</summary>
    public const int SmallTensorAlignment = 64;

    /// <summary>Gets whether tensor data goes to a separate data file; <see cref="ExternalDataPolicy.Auto"/> by default.</summary>
    public ExternalDataPolicy ExternalData { get; init; } = ExternalDataPolicy.Auto;

    /// <summary>
    /// Gets the data file's name, in the model's directory; <see langword="null"/> (the default) for the model's file
    /// name with <c>.data</c> appended, e.g. <c>model.onnx.data</c>. It must be a plain file name, without directories.
    /// </summary>
    public string? ExternalDataFileName { get; init; }

    /// <summary>
    /// Gets the size, in bytes of raw data, below which an initializer or Constant-node value stays inline when the model
    /// is written with external data; 1024 by default, as in the ONNX Python tools. Tensors already stored externally
    /// stay external whatever their size.
    /// </summary>
    public long SizeThreshold { get; init; } = 1024;

    /// <summary>Checks the options and returns the data file's name for a model written to <paramref name="modelPath"/>.</summary>
    internal static string DataFileNameFor(OnnxSaveOptions options, string modelPath)
    {
        if (!Enum.IsDefined(options.ExternalData))
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.ExternalData, "ExternalData is not an external-data policy.");
        }

        if (options.SizeThreshold < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.SizeThreshold, "SizeThreshold must not be negative.");
        }

        string name = options.ExternalDataFileName ?? $"{Path.GetFileName(modelPath)}.data";
        if (name.Length == 0 || name is "." or ".." || Path.GetFileName(name) != name || name.Contains('/', StringComparison.Ordinal) || name.Contains('\\', StringComparison.Ordinal))
        {
            throw new ArgumentException($"ExternalDataFileName '{name}' is not a plain file name.", nameof(options));
        }

        return name;
    }
}
