namespace Quantization.Onnx;

/// <summary>
/// What channel scaling does when the input a group of layers shares is also read elsewhere (a residual Add, another
/// operator, a graph output): folding 1/s into the producer would change what those readers see.
/// </summary>
public enum OnnxOtherConsumerPolicy
{
    /// <summary>
    /// The producer writes the scaled value under a new name that only the group reads, and a Mul by s after it restores
    /// the original value under the original name for every other reader (and for a graph output). Exact up to float
    /// rounding; it costs one element-wise Mul per such group at inference.
    /// </summary>
    Compensate,

    /// <summary>The group is left alone and reported as skipped.</summary>
    Skip,
}
