namespace Quantization;

/// <summary>How many parameter pairs (scale, zero point) a tensor gets and which elements share one.</summary>
public enum GranularityKind
{
    /// <summary>One pair for the whole tensor.</summary>
    PerTensor,

    /// <summary>One pair per index along <see cref="QuantizationGranularity.Axis"/>; parameters have shape [dim(axis)].</summary>
    PerChannel,

    /// <summary>
    /// One pair per block of <see cref="QuantizationGranularity.GroupSize"/> consecutive indices along
    /// <see cref="QuantizationGranularity.Axis"/>, for every index of the other axes (ONNX blocked quantization):
    /// parameters have the tensor's shape with ceil(dim(axis) / group size) on the axis. When the group size does not
    /// divide the dimension, the last block of each row is partial (as in ONNX, and as ONNX Runtime's MatMulNBits gets by
    /// padding with zeros, which every range already contains).
    /// </summary>
    PerGroup,

    /// <summary>One pair per row (every index of all axes but the last); parameters have shape dims[..^1].</summary>
    PerToken,
}
