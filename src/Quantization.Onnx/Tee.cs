namespace Quantization.Onnx;

/// <summary>Shows every recorded tensor to several recorders.</summary>
internal sealed class Tee(params IActivationRecorder[] recorders) : IActivationRecorder
{
    /// <inheritdoc/>
    public void Record(string name, ReadOnlySpan<float> values, ReadOnlySpan<int> shape)
    {
        foreach (IActivationRecorder recorder in recorders)
        {
            recorder.Record(name, values, shape);
        }
    }
}
