using Quantization;

namespace Quantization.Samples;

/// <summary>
/// The weights of a Hugging Face-layout safetensors checkpoint (one file or shards, <c>config.json</c> beside it), float
/// (fp32, fp16, bf16) or the compressed-tensors output of <c>ptq quantize</c> (int8 or pack-quantized int4), whose
/// quantized weights are read as <see cref="QuantizedTensor"/>s, without a float round trip.
/// </summary>
public sealed class CheckpointWeights : LlamaWeights
{
    private readonly SafeTensorsCheckpoint _checkpoint;
    private readonly HashSet<string> _names;
    private readonly QuantizationScheme? _scheme;

    /// <summary>Initializes a new instance of the <see cref="CheckpointWeights"/> class.</summary>
    /// <param name="path">A <c>.safetensors</c> file, an index <c>.json</c>, or their directory.</param>
    public CheckpointWeights(string path)
    {
        _checkpoint = SafeTensorsCheckpoint.Open(path);
        _names = [.. _checkpoint.Tensors.Select(t => t.Tensor.Name)];
        _scheme = CheckpointQuantizer.ReadScheme(path);
        string directory = Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path))!;
        Config = LlamaConfig.Read(Path.Combine(directory, "config.json"));
    }

    /// <inheritdoc/>
    public override LlamaConfig Config { get; }

    /// <summary>Gets a value indicating whether the checkpoint's weights are stored quantized.</summary>
    public bool IsQuantized => _scheme is not null;

    /// <summary>Gets the weights' scheme when stored quantized.</summary>
    public QuantizationScheme? Scheme => _scheme;

    /// <inheritdoc/>
    public override bool Has(string name) => _names.Contains(name);

    /// <inheritdoc/>
    public override float[] ReadFloat(string name, int rows, int columns)
    {
        if (!_names.Contains(name))
        {
            throw new InvalidDataException($"The checkpoint has no tensor '{name}'.");
        }

        float[] values = _checkpoint.FileOf(name).ReadSingles(name);
        if (values.LongLength != (long)rows * columns)
        {
            throw new InvalidDataException($"Tensor '{name}' has {values.LongLength} values; the configuration needs [{rows}, {columns}].");
        }

        return values;
    }

    /// <inheritdoc/>
    public override QuantizedTensor? ReadQuantized(string name) =>
        _scheme is not null && _names.Contains(name + "_scale") ? CheckpointQuantizer.ReadQuantized(_checkpoint, name, _scheme) : null;

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _checkpoint.Dispose();
        }

        base.Dispose(disposing);
    }
}
