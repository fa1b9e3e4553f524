namespace Quantization;

/// <summary>Receives the named activation tensors that a forward step produces for one batch.</summary>
public interface IActivationRecorder
{
    /// <summary>Records one activation tensor; it is folded into that name's observer at once and not kept.</summary>
    /// <param name="name">The tensor's name, the key of its parameters.</param>
    /// <param name="values">The values, row-major.</param>
    /// <param name="shape">The shape.</param>
    void Record(string name, ReadOnlySpan<float> values, ReadOnlySpan<int> shape);
}
