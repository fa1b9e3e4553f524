using Microsoft.ML.OnnxRuntime;

namespace Quantization.Onnx;

/// <summary>ONNX Runtime settings that decide how it computes the models these quantizers write.</summary>
public static class SessionOptionsExtensions
{
    /// <summary>ONNX Runtime's session setting for the arithmetic of the MatMulNBits kernels it fuses from DequantizeLinear + MatMul.</summary>
    public const string MatMulNBitsAccuracyLevelKey = "session.qdq_matmulnbits_accuracy_level";

    /// <summary>
    /// Keeps weight-only (W8A16) MatMuls in float arithmetic. At its default optimisation level ONNX Runtime fuses an
    /// int8 weight's DequantizeLinear and its MatMul into a <c>MatMulNBits</c> kernel (bits 8, blocks of 32) whose
    /// default accuracy level 4 quantizes the activations to int8 on the fly: faster, but it is then W8A8 with
    /// dynamic activations, and the model loses accuracy it had at the basic level. This sets accuracy level 1
    /// (float32 activations), which computes what the DequantizeLinear + MatMul pair does.
    /// </summary>
    /// <param name="options">The session's options.</param>
    /// <returns>The same options, for chaining.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is <see langword="null"/>.</exception>
    public static SessionOptions KeepWeightOnlyMatMulInFloat(this SessionOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.AddSessionConfigEntry(MatMulNBitsAccuracyLevelKey, "1");
        return options;
    }
}
