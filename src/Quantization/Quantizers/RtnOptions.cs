namespace Quantization;

/// <summary>Rules for <see cref="RtnQuantizer"/>: which tensors to quantize, and how.</summary>
public sealed class RtnOptions
{
    /// <summary>Gets or sets the scheme of tensors no override matches; symmetric int8 per output channel (axis 0) by default.</summary>
    public QuantizationScheme DefaultScheme { get; set; } = QuantizationScheme.Int8PerChannel();

    /// <summary>Gets the patterns of tensors to quantize; when empty, every tensor is a candidate.</summary>
    public IList<NamePattern> Include { get; } = [];

    /// <summary>Gets the patterns of tensors to keep in float (Golden Stick's <c>opname_blacklist</c>, llm-compressor's <c>ignore</c>); they win over <see cref="Include"/>.</summary>
    public IList<NamePattern> Exclude { get; } = [];

    /// <summary>Gets per-tensor scheme overrides, for mixed precision or another axis; the first matching pattern wins.</summary>
    public IList<KeyValuePair<NamePattern, QuantizationScheme>> Overrides { get; } = [];

    /// <summary>Gets or sets the smallest rank quantized: 2 by default, so biases and norm weights stay in float.</summary>
    public int MinimumRank { get; set; } = 2;
}
