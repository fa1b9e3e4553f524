namespace Quantization.Onnx;

/// <summary>
/// How <see cref="OnnxWeightQuantizer"/> writes MatMul and Gemm weights as ONNX Runtime's
/// <c>com.microsoft.MatMulNBits</c> (set <see cref="OnnxWeightQuantizationOptions.MatMulNBits"/>): 8-bit codes in
/// blocks of <see cref="BlockSize"/> consecutive inputs of one output channel, each block with its own scale (and zero
/// point when the scheme is asymmetric). ONNX Runtime runs such a node from the packed weight, without materialising a
/// float copy of it on every inference as DequantizeLinear + MatMul does.
/// </summary>
public sealed class MatMulNBitsOptions
{
    private int _blockSize = 32;
    private int _accuracyLevel = 1;

    /// <summary>
    /// Gets or sets the number of consecutive inputs (along K) that share a scale: a power of two, at least 16; 32 by
    /// default (the block ONNX Runtime itself uses when it fuses int8 DequantizeLinear + MatMul, and on all-MiniLM-L6-v2
    /// as fast as 128 with a smaller weight error). K is zero-padded to a whole number of blocks.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a power of two of at least 16.</exception>
    public int BlockSize
    {
        get => _blockSize;
        set => _blockSize = value >= 16 && int.IsPow2(value) ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "MatMulNBits blocks are a power of two of at least 16.");
    }

    /// <summary>
    /// Gets or sets the node's <c>accuracy_level</c>, the arithmetic ONNX Runtime's CPU kernel uses for the activation
    /// A: 0 unset (the kernel's default, fp32 on CPU), 1 fp32, 2 fp16, 3 bf16, 4 int8 (A is quantized on the fly per
    /// block to int8 with scale max|A|/127, and the dot products run on the integer units). 1 by default: the model then
    /// computes what DequantizeLinear + MatMul computes, at every optimisation level. 4 is faster and turns the model into
    /// W8A8 with dynamic activations, with the accuracy loss that brings. ONNX Runtime's optimisation level does not
    /// change an explicit MatMulNBits node's level (the session option of
    /// <see cref="SessionOptionsExtensions.MatMulNBitsAccuracyLevelKey"/> applies only to the MatMulNBits it fuses from
    /// QDQ weights).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside [0, 4].</exception>
    public int AccuracyLevel
    {
        get => _accuracyLevel;
        set => _accuracyLevel = value is >= 0 and <= 4 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "MatMulNBits accuracy levels are 0 (unset), 1 (fp32), 2 (fp16), 3 (bf16) and 4 (int8).");
    }
}
