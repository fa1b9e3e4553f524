namespace Quantization;

/// <summary>Rules for <see cref="CheckpointQuantizer"/>.</summary>
public sealed class CheckpointQuantizationOptions
{
    /// <summary>
    /// Gets or sets the weights' scheme: int8, symmetric or not, per output channel (axis 0 of the [out, in] weight, the
    /// default), per group along the input axis, or per tensor; or 4-bit, symmetric <see cref="QuantizedType.Int4"/> or
    /// asymmetric <see cref="QuantizedType.UInt4"/>, per output channel or per group along the input axis (a last partial
    /// group allowed). <c>QuantizationScheme.Int4PerGroup(128)</c> is compressed-tensors' W4A16 recipe.
    /// </summary>
    public QuantizationScheme Scheme { get; set; } = QuantizationScheme.Int8PerChannel();

    /// <summary>Gets name patterns of tensors to quantize; when empty, every float tensor of rank 2 is a candidate.</summary>
    public IList<NamePattern> Include { get; } = [];

    /// <summary>Gets name patterns of tensors kept as they are; they win over <see cref="Include"/>. Embeddings, norms and <c>lm_head</c> by default.</summary>
    public IList<NamePattern> Exclude { get; } = [new("*embed*"), new("*norm*"), new("*lm_head*")];

    /// <summary>Checks the scheme.</summary>
    internal void Validate() => Validate(Scheme);

    /// <summary>Checks that a scheme is one the checkpoint layouts hold.</summary>
    /// <param name="scheme">The scheme.</param>
    /// <exception cref="NotSupportedException">It is not int8 per tensor, per output channel or per group along the inputs, nor 4-bit (symmetric Int4 or asymmetric UInt4) per output channel or per group along the inputs.</exception>
    internal static void Validate(QuantizationScheme scheme)
    {
        QuantizationGranularity granularity = scheme.Granularity;
        bool alongInputs = granularity.Kind == GranularityKind.PerGroup && granularity.Axis is 1 or -1;
        bool perRow = granularity.Kind == GranularityKind.PerChannel && granularity.Axis == 0;
        bool supported = scheme.Type switch
        {
            QuantizedType.Int8 => alongInputs || perRow || granularity.Kind == GranularityKind.PerTensor,
            QuantizedType.Int4 or QuantizedType.UInt4 => scheme.Symmetric == (scheme.Type == QuantizedType.Int4) && (alongInputs || perRow),
            _ => false,
        };
        if (!supported)
        {
            throw new NotSupportedException($"Checkpoint weights are quantized to int8 per tensor, per output channel (axis 0) or per group along the input axis, or to 4 bits (symmetric Int4 or asymmetric UInt4) per output channel or per group along the input axis; not {scheme}.");
        }
    }

    /// <summary>Whether a tensor is to be quantized: a non-empty 2-D float tensor the patterns select.</summary>
    internal bool Selects(SafeTensorInfo tensor) =>
        tensor.Shape.Count == 2 && tensor.ElementCount > 0 && tensor.DataType is SafeTensorDataType.Float16 or SafeTensorDataType.BFloat16 or SafeTensorDataType.Float32 or SafeTensorDataType.Float64
        && (Include.Count == 0 || Include.Any(p => p.IsMatch(tensor.Name))) && !Exclude.Any(p => p.IsMatch(tensor.Name));
}
