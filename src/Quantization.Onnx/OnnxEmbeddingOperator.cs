namespace Quantization.Onnx;

/// <summary>The operator that reads a quantized embedding table (see <see cref="OnnxEmbeddingQuantizationOptions.Operator"/>).</summary>
public enum OnnxEmbeddingOperator
{
    /// <summary>
    /// ONNX Runtime's <c>com.microsoft.GatherBlockQuantized</c> replaces the Gather: it dequantizes only the rows it
    /// gathers, so the table stays quantized in memory as on disk. Runs in ONNX Runtime only.
    /// </summary>
    GatherBlockQuantized,

    /// <summary>
    /// A standard DequantizeLinear feeds the Gather: any ONNX runtime runs it, but it dequantizes the whole table on
    /// every run (ONNX Runtime does not fold a DequantizeLinear of a constant), so it is slower and holds a float copy
    /// of the table while it runs.
    /// </summary>
    DequantizeLinear,
}
